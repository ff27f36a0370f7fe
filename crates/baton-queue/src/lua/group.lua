-- Creates the consumer group (and the stream) unless it exists, and notes since when the group has
-- been delivering (`<stream>:since`, a stream id made of Redis's clock). An ended entry leaves the
-- stream, so an entry nobody holds and the stream lacks was ended when it is newer than that, and
-- lost with Redis's data (a restart without it) when it is older; see `holding` in the prelude.
-- Returns 'created' or 'exists'.
local stream, since = KEYS[1], KEYS[2]
local group = ARGV[1]

local made = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local clock = redis.call('TIME')
local now = string.format('%d-0', tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
if type(made) == 'table' and made.err then
  if string.find(made.err, 'BUSYGROUP', 1, true) then
    redis.call('SET', since, now, 'NX')
    return 'exists'
  end
  return redis.error_reply(made.err)
end
redis.call('SET', since, now)
return 'created'
