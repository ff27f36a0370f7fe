-- Gives entries back to the group at once (on shutdown, or when this worker pauses): marks them
-- idle since long ago, so the next claim pass of any replica takes them, and releases their leases.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] idle ms to set, ARGV[4] lease key prefix,
-- ARGV[5] the wake channel, then pairs of (entry id, project or '').
-- Returns how many entries were handed back.
local n = 0
for i = 6, #ARGV, 2 do
  local id, project = ARGV[i], ARGV[i + 1]
  if owns(KEYS[1], ARGV[1], id, ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    if project ~= '' then
      local lease = ARGV[4] .. project
      if redis.call('GET', lease) == ARGV[2] .. ':' .. id then
        redis.call('DEL', lease)
      end
    end
    n = n + 1
  end
end
if n > 0 then
  redis.call('PUBLISH', ARGV[5], 'handed back')
end
return n
