-- Shared by every Baton script (prepended when the scripts are built).

-- The project an entry belongs to: the `project_id` of its `job` field, when that is a safe id.
-- Entries that are not jobs belong to no project; the worker dead-letters them without ordering.
local function project_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'job' then
      local ok, job = pcall(cjson.decode, fields[i + 1])
      if ok and type(job) == 'table' and type(job.project_id) == 'string'
          and #job.project_id <= 128 and string.match(job.project_id, '^[%w][%w%._:%-]*$') then
        return job.project_id
      end
      return false
    end
  end
  return false
end

-- The consumer holding `id` in the group's pending list and the entry's idle milliseconds, or false
-- when nobody holds it: the entry was acknowledged, or the group created anew, or Redis lost it.
local function holder(stream, group, id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p == 1 then
    return p[1][2], tonumber(p[1][3])
  end
  return false
end

-- Whether stream id `a` is older than stream id `b` (both `<ms>-<seq>`).
local function older(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if not a_ms or not b_ms then
    return true
  end
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  return a_ms < b_ms or (a_ms == b_ms and tonumber(a_seq) < tonumber(b_seq))
end

-- What a caller holding `id` as `consumer` should make of it: 'ours' still its own; 'taken' another
-- consumer took it, or ended it, or the group was created anew over the stream (and delivers it
-- again); 'gone' Redis lost it. Then the entry's idle milliseconds, when someone holds it. An ended
-- entry leaves the stream, so one that nobody holds and the stream lacks was ended if it is newer
-- than the group (`<stream>:since`, see group.lua), and lost with Redis's data if it is older.
local function holding(stream, group, id, consumer)
  local h, idle = holder(stream, group, id)
  if h == consumer then
    return 'ours', idle
  elseif h then
    return 'taken', idle
  elseif #redis.call('XRANGE', stream, id, id) > 0 then
    return 'taken'
  end
  local since = redis.call('GET', stream .. ':since')
  if since and not older(id, since) then
    return 'taken'
  end
  return 'gone'
end
