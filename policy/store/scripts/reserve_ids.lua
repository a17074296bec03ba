-- Reserve ARGV[2] approval ids above both the counter (KEYS[1]) and every id in a file (ARGV[1]), so a new
-- grant never takes an id the file restores. Returns the last reserved number.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then current = floor end
local last = current + tonumber(ARGV[2])
redis.call('SET', KEYS[1], last)
return last
