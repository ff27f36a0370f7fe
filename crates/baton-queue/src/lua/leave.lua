-- Removes a consumer from the group when it holds nothing. Deleting one that still holds entries
-- (handed back at shutdown, not yet claimed) would drop them from the pending list, where no claim
-- pass would find them again.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer
-- Returns 'left', or 'holds' when the consumer still holds entries.
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then
  return 'holds'
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 'left'
