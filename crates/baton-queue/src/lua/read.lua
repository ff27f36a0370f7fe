-- Delivers new entries to a consumer and queues each under its project in the same step, so every
-- project's queue is in stream order whichever replica read which entry.
-- Returns {'delivered', {{id, fields, project|false}, ...}}, or {'empty', last delivered id} when
-- nothing is new.
local stream = KEYS[1]
local group, consumer, count, queue_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
local out = {}
if reply then
  for _, entry in ipairs(reply[1][2]) do
    local project = project_of(entry[2])
    if project then
      redis.call('RPUSH', queue_prefix .. project, entry[1])
    end
    table.insert(out, {entry[1], entry[2], project})
  end
end
if #out > 0 then
  return {'delivered', out}
end
local groups = redis.call('XINFO', 'GROUPS', stream)
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == group then
    return {'empty', last}
  end
end
return {'empty', '0-0'}
