-- Removes a consumer from the group when it holds nothing. Deleting one that still holds entries
-- (handed back at shutdown, not yet claimed) would drop them from the pending list, where no claim
-- pass would find them again.
-- Returns 'left', or 'holds' when the consumer still holds entries.
local stream = KEYS[1]
local group, consumer = ARGV[1], ARGV[2]

local held = redis.call('XPENDING', stream, group, '-', '+', 1, consumer)
if #held > 0 then
  return 'holds'
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
return 'left'
