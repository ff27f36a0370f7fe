-- Delivers new entries to a consumer and queues each under its project in the same step, so every
-- project's queue is in stream order whichever replica read which entry.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] project queue key prefix
-- Returns {1, {{id, fields, project|false}, ...}}, or {0, last delivered id} when nothing is new.
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
local out = {}
if reply then
  for _, entry in ipairs(reply[1][2]) do
    local project = project_of(entry[2])
    if project then
      redis.call('RPUSH', ARGV[4] .. project, entry[1])
    end
    table.insert(out, {entry[1], entry[2], project})
  end
end
if #out > 0 then
  return {1, out}
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] then
    return {0, last}
  end
end
return {0, '0-0'}
