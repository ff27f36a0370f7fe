-- Ends an entry: optionally into the dead-letter stream, then acknowledged and deleted (the stream
-- holds only work), out of its project's queue, and its lease released. Only its holder may end it: a stale worker cannot ack the entry its
-- successor runs. An entry nobody holds any more (Redis lost it) is ended by the worker that ran it,
-- so its dead letter is not lost. The job's final progress event rides along, so a job's end is one
-- round trip.
-- KEYS[1] stream, KEYS[2] project queue, KEYS[3] project lease, KEYS[4] dead-letter stream,
-- KEYS[5] events stream
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer, ARGV[4] '1' when it has a project,
-- ARGV[5] 'ack' or 'dead', ARGV[6] the wake channel, ARGV[7] the event's JSON or '',
-- ARGV[8] the events stream's approximate length cap, ARGV[9] the event's field name, ARGV[10] the
-- dead-letter stream's approximate length cap, then the dead letter's field/value pairs.
-- Returns 1 when ended, 0 when the entry is not this consumer's.
if ARGV[7] ~= '' then
  -- Published whoever holds the entry: the event reports the job, which the ledger already ended.
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', ARGV[9], ARGV[7])
end
if holding(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) == 0 then
  return 0
end
if ARGV[5] == 'dead' then
  local fields = {}
  for i = 11, #ARGV do
    table.insert(fields, ARGV[i])
  end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == '1' then
  redis.call('LREM', KEYS[2], 0, ARGV[2])
  if redis.call('GET', KEYS[3]) == ARGV[3] .. ':' .. ARGV[2] then
    redis.call('DEL', KEYS[3])
  end
  -- Whoever holds the project's next entry may start it now.
  redis.call('PUBLISH', ARGV[6], 'freed')
end
return 1
