-- Takes over entries that no live consumer has refreshed for the claim timeout.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms, ARGV[4] count
-- Returns {{id, fields, project|false}, ...}.
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, entry in ipairs(reply[2]) do
  if entry and entry[2] then
    table.insert(out, {entry[1], entry[2], project_of(entry[2])})
  end
end
return out
