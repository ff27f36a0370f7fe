-- Keeps a consumer's entries (and the leases of those running) fresh, so no replica claims them;
-- reports the ones taken or ended elsewhere and the ones Redis lost.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] lease ms, ARGV[4] lease key prefix, ARGV[5] the idle ms
-- a handback sets, then pairs of (entry id, project when the entry is running, else '').
-- Returns one 1 (still ours), 0 (taken or ended elsewhere) or -1 (lost) per entry.
local out = {}
for i = 6, #ARGV, 2 do
  local id, project = ARGV[i], ARGV[i + 1]
  local held, idle = holding(KEYS[1], ARGV[1], id, ARGV[2])
  -- An entry this consumer has just handed back stays handed back: refreshing it would hide it from
  -- the claim passes until the claim timeout.
  if held == 1 and idle < tonumber(ARGV[5]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  end
  if held ~= 0 and project ~= '' then
    local lease = ARGV[4] .. project
    local owner = ARGV[2] .. ':' .. id
    local current = redis.call('GET', lease)
    if current == owner then
      redis.call('PEXPIRE', lease, ARGV[3])
    elseif not current and held == -1 then
      -- Redis lost the running entry with the lease (a restart without its data): the job runs on,
      -- so it takes the lease back and no other job of its project starts meanwhile.
      redis.call('SET', lease, owner, 'PX', ARGV[3])
    end
  end
  table.insert(out, held)
end
return out
