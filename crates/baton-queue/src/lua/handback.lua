-- Gives entries back to the group at once (on shutdown, or when this worker pauses): marks them
-- idle since long ago, so the next claim pass of any replica takes them, and releases their leases.
-- An entry nobody holds any more (Redis lost it) cannot be handed back, but its lease is released
-- all the same, so the copy its worker enqueues does not wait for it to expire.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] idle ms to set, ARGV[4] lease key prefix,
-- ARGV[5] the wake channel, then pairs of (entry id, project or '').
-- Returns one 1 (handed back), 0 (taken or ended elsewhere) or -1 (Redis lost it) per entry.
local announce = false
local out = {}
for i = 6, #ARGV, 2 do
  local id, project = ARGV[i], ARGV[i + 1]
  local held = holding(KEYS[1], ARGV[1], id, ARGV[2])
  table.insert(out, held)
  if held == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    announce = true
  end
  if held ~= 0 and project ~= '' then
    local lease = ARGV[4] .. project
    if redis.call('GET', lease) == ARGV[2] .. ':' .. id then
      redis.call('DEL', lease)
      announce = true
    end
  end
end
if announce then
  redis.call('PUBLISH', ARGV[5], 'handed back')
end
return out
