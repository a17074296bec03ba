-- Add entries to a category's live generation (creating generation 1 of a new category) and announce them
-- only if any was new. KEYS: categories, gen:seq, policy:version, changes channel.
-- ARGV: prefix, category, the change's JSON, then the entries.
local generation = redis.call('HGET', KEYS[1], ARGV[2])
if not generation then
  generation = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[2], generation)
end
local key = ARGV[1] .. 'cat:' .. ARGV[2] .. ':' .. generation
local added = redis.call('SADD', key, unpack(ARGV, 4))
if added > 0 then
  local version = redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', KEYS[4], version .. ' ' .. ARGV[3])
end
return added
