-- Ends an entry: optionally into the dead-letter stream, then acknowledged and deleted (the stream
-- holds only work), out of its project's queue, and its lease released. Only its holder may end
-- it: a stale worker cannot ack the entry its successor runs. An entry nobody holds any more (Redis lost it) is ended by the worker that ran it,
-- so its dead letter is not lost. The job's final progress event rides along, so a job's end is one
-- round trip.
-- ARGV after the named ones: the dead letter's field/value pairs.
-- Returns 'ended', or 'taken' when the entry is not this consumer's.
local stream, queue, lease, dead, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, id, consumer, project, ending, wake = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local event, events_maxlen, event_field, dead_maxlen = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local first_letter_field = 11

if event ~= '' then
  -- Published whoever holds the entry: the event reports the job, which the ledger already ended.
  redis.call('XADD', events, 'MAXLEN', '~', events_maxlen, '*', event_field, event)
end
if holding(stream, group, id, consumer) == 'taken' then
  return 'taken'
end
if ending == 'dead' then
  local fields = {}
  for i = first_letter_field, #ARGV do
    table.insert(fields, ARGV[i])
  end
  redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', unpack(fields))
end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
if project ~= '' then
  redis.call('LREM', queue, 0, id)
  if redis.call('GET', lease) == consumer .. ':' .. id then
    redis.call('DEL', lease)
  end
  -- Whoever holds the project's next entry may start it now: the message names the project, so
  -- the others need not try theirs.
  redis.call('PUBLISH', wake, 'freed:' .. project)
end
return 'ended'
