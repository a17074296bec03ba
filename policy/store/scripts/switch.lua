-- Switch categories to their staged generations in one step; refuse if any moved on since staging began.
-- KEYS: categories, policy:version, changes channel.
-- ARGV: the change's JSON, prefix, merge flag, then (category, staged generation, live generation) per category.
-- A merge first folds in what `add_hosts` wrote to the live generation while the import was staging.
local n = (#ARGV - 3) / 3
for i = 0, n - 1 do
  local current = redis.call('HGET', KEYS[1], ARGV[4 + i * 3]) or ''
  if current ~= ARGV[6 + i * 3] then
    return redis.error_reply('CONFLICT ' .. ARGV[4 + i * 3] .. ' changed during the import')
  end
end
for i = 0, n - 1 do
  local category, staged, live = ARGV[4 + i * 3], ARGV[5 + i * 3], ARGV[6 + i * 3]
  if ARGV[3] == '1' and live ~= '' then
    local staged_key = ARGV[2] .. 'cat:' .. category .. ':' .. staged
    redis.call('SUNIONSTORE', staged_key, staged_key, ARGV[2] .. 'cat:' .. category .. ':' .. live)
  end
  redis.call('HSET', KEYS[1], category, staged)
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], version .. ' ' .. ARGV[1])
return version
