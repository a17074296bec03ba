-- Move an approval's `last used` (hash KEYS[1], field ARGV[1]) forward to ARGV[2], never back: workers flush
-- their counts in any order. ISO-8601 UTC times compare correctly as strings.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (not old) or old < ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
