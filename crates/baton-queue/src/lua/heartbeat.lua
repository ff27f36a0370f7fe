-- Keeps a consumer's entries (and the leases of those running) fresh, so no replica claims them;
-- reports the ones taken or ended elsewhere and the ones Redis lost.
-- ARGV after the named ones: pairs of (entry id, project when the entry is running, else '').
-- Returns one 'ours', 'taken' (taken or ended elsewhere) or 'gone' (Redis lost it) per entry.
local stream = KEYS[1]
local group, consumer, lease_ms, lease_prefix, handed_back_ms =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

local out = {}
for i = 6, #ARGV, 2 do
  local id, project = ARGV[i], ARGV[i + 1]
  local held, idle = holding(stream, group, id, consumer)
  -- An entry this consumer has just handed back stays handed back: refreshing it would hide it from
  -- the claim passes until the claim timeout.
  if held == 'ours' and idle < handed_back_ms then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
  end
  if held ~= 'taken' and project ~= '' then
    local lease = lease_prefix .. project
    local owner = consumer .. ':' .. id
    local current = redis.call('GET', lease)
    if current == owner then
      redis.call('PEXPIRE', lease, lease_ms)
    elseif not current and held == 'gone' then
      -- Redis lost the running entry with the lease (a restart without its data): the job runs on,
      -- so it takes the lease back and no other job of its project starts meanwhile.
      redis.call('SET', lease, owner, 'PX', lease_ms)
    end
  end
  table.insert(out, held)
end
return out
