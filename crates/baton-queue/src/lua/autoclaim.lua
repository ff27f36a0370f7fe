-- Takes over entries that no live consumer has refreshed for the claim timeout.
-- Returns {{id, fields, project|false}, ...}.
local stream = KEYS[1]
local group, consumer, min_idle_ms, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local reply = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle_ms, '0-0', 'COUNT', count)
local out = {}
for _, entry in ipairs(reply[2]) do
  if entry and entry[2] then
    table.insert(out, {entry[1], entry[2], project_of(entry[2])})
  end
end
return out
