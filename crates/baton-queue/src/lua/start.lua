-- Lets an entry start when it is the oldest unfinished entry of its project and no other holder
-- has the project's lease; takes the lease.
-- KEYS[1] stream, KEYS[2] project queue, KEYS[3] project lease
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer, ARGV[4] lease ms
-- Returns 1 started, 0 wait, -1 the entry was taken or ended elsewhere, -2 Redis lost it.
local held = holding(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if held ~= 1 then
  return held - 1
end
if not redis.call('LPOS', KEYS[2], ARGV[2]) then
  -- The queue lost this entry (Redis restarted without persistence): queue it again.
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if head == ARGV[2] then
    break
  end
  -- A head nobody holds any more (acknowledged or deleted elsewhere) must not block the queue.
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], head, head, 1)
  if #pending == 0 then
    redis.call('LPOP', KEYS[2])
  else
    return 0
  end
end
local owner = ARGV[3] .. ':' .. ARGV[2]
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= owner then
  return 0
end
redis.call('SET', KEYS[3], owner, 'PX', ARGV[4])
return 1
