-- Gives entries back to the group at once (on shutdown, or when this worker pauses): marks them
-- idle since long ago, so the next claim pass of any replica takes them, and releases their leases.
-- An entry nobody holds any more (Redis lost it) cannot be handed back, but its lease is released
-- all the same, so the copy its worker enqueues does not wait for it to expire.
-- ARGV after the named ones: pairs of (entry id, project or '').
-- Returns one 'ours' (handed back), 'taken' (taken or ended elsewhere) or 'gone' (Redis lost it)
-- per entry.
local stream = KEYS[1]
local group, consumer, idle_ms, lease_prefix, wake = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local announce = false
local out = {}
for i = 6, #ARGV, 2 do
  local id, project = ARGV[i], ARGV[i + 1]
  local held = holding(stream, group, id, consumer)
  table.insert(out, held)
  if held == 'ours' then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle_ms, 'JUSTID')
    announce = true
  end
  if held ~= 'taken' and project ~= '' then
    local lease = lease_prefix .. project
    if redis.call('GET', lease) == consumer .. ':' .. id then
      redis.call('DEL', lease)
      announce = true
    end
  end
end
if announce then
  redis.call('PUBLISH', wake, 'handed back')
end
return out
