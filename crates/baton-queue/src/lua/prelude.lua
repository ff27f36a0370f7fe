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

-- Whether `consumer` holds `id` in the group's pending list.
local function owns(stream, group, id, consumer)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return #p == 1 and p[1][2] == consumer
end
