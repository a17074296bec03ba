-- Add entries to one source's live list of a category (creating generation 1 of a new list) and announce them
-- only if any was new, noting when the source was last written.
-- KEYS: lists, gen:seq, sources, policy:version, changes channel.
-- ARGV: prefix, category, source, the change's JSON, the source's info JSON, then the entries.
local field = ARGV[2] .. ':' .. ARGV[3]
local generation = redis.call('HGET', KEYS[1], field)
if not generation then
  generation = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], field, generation)
end
local key = ARGV[1] .. 'cat:' .. ARGV[2] .. ':' .. generation
local added = redis.call('SADD', key, unpack(ARGV, 6))
if added > 0 then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
  local version = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', KEYS[5], version .. ' ' .. ARGV[4])
end
return added
