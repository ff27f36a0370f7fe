-- Lets an entry start when it is the oldest unfinished entry of its project and no other holder
-- has the project's lease; takes the lease.
-- Returns 'started', 'wait', 'taken' (taken or ended elsewhere) or 'gone' (Redis lost it).
local stream, queue, lease = KEYS[1], KEYS[2], KEYS[3]
local group, id, consumer, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local held = holding(stream, group, id, consumer)
if held ~= 'ours' then
  return held
end
if not redis.call('LPOS', queue, id) then
  -- The queue lost this entry (Redis restarted without persistence): queue it again.
  redis.call('RPUSH', queue, id)
end
while true do
  local head = redis.call('LINDEX', queue, 0)
  if head == id then
    break
  end
  -- A head nobody holds any more (acknowledged or deleted elsewhere) must not block the queue.
  local pending = redis.call('XPENDING', stream, group, head, head, 1)
  if #pending == 0 then
    redis.call('LPOP', queue)
  else
    return 'wait'
  end
end
local owner = consumer .. ':' .. id
local current = redis.call('GET', lease)
if current and current ~= owner then
  return 'wait'
end
redis.call('SET', lease, owner, 'PX', lease_ms)
return 'started'
