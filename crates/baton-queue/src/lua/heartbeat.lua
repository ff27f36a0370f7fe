-- Keeps a consumer's entries (and the leases of those running) fresh, so no replica claims them;
-- reports the ones another consumer took.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] lease ms, ARGV[4] lease key prefix,
-- then pairs of (entry id, project or '').
-- Returns one 1 (still ours) or 0 (taken) per entry.
local out = {}
for i = 5, #ARGV, 2 do
  local id, project = ARGV[i], ARGV[i + 1]
  if owns(KEYS[1], ARGV[1], id, ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    if project ~= '' then
      local lease = ARGV[4] .. project
      if redis.call('GET', lease) == ARGV[2] .. ':' .. id then
        redis.call('PEXPIRE', lease, ARGV[3])
      end
    end
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
