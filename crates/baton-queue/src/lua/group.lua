-- Creates the consumer group (and the stream) unless it exists, and notes where this incarnation
-- of the stream begins (`<stream>:since`): its oldest entry when the group is created (the group
-- starts at the stream's beginning, so it delivers those too), or Redis's clock for an empty
-- stream. An ended entry leaves the stream, so an entry nobody holds and the stream lacks was ended
-- when it is not older than that, and lost with Redis's data (a restart without it) when it is;
-- see `holding` in the prelude.
-- Returns 'created' or 'exists'.
local stream, since = KEYS[1], KEYS[2]
local group = ARGV[1]

local made = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local begins
local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #oldest > 0 then
  begins = oldest[1][1]
else
  local clock = redis.call('TIME')
  begins = string.format('%d-0', tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
end
if type(made) == 'table' and made.err then
  if string.find(made.err, 'BUSYGROUP', 1, true) then
    redis.call('SET', since, begins, 'NX')
    return 'exists'
  end
  return redis.error_reply(made.err)
end
redis.call('SET', since, begins)
return 'created'
