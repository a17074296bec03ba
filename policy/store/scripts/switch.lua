-- Switch one source's lists to their staged generations in one step; refuse if any moved on since staging began.
-- KEYS: lists, sources, policy:version, changes channel.
-- ARGV: the change's JSON, prefix, merge flag, source, the source's info JSON, then (category, staged
-- generation or '' to drop the list, live generation or '') per category.
-- A merge first folds in what was written to the live generation while the import was staging.
local n = (#ARGV - 5) / 3
for i = 0, n - 1 do
  local current = redis.call('HGET', KEYS[1], ARGV[6 + i * 3] .. ':' .. ARGV[4]) or ''
  if current ~= ARGV[8 + i * 3] then
    return redis.error_reply('CONFLICT ' .. ARGV[6 + i * 3] .. ' (' .. ARGV[4] .. ') changed during the import')
  end
end
for i = 0, n - 1 do
  local category, staged, live = ARGV[6 + i * 3], ARGV[7 + i * 3], ARGV[8 + i * 3]
  local field = category .. ':' .. ARGV[4]
  if staged == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    if ARGV[3] == '1' and live ~= '' then
      local staged_key = ARGV[2] .. 'cat:' .. category .. ':' .. staged
      redis.call('SUNIONSTORE', staged_key, staged_key, ARGV[2] .. 'cat:' .. category .. ':' .. live)
    end
    redis.call('HSET', KEYS[1], field, staged)
  end
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
end
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[4], version .. ' ' .. ARGV[1])
return version
