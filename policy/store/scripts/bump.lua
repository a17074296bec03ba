-- Bump the policy version and announce a change, atomically (inside the caller's MULTI when there is one).
-- KEYS: policy:version, changes channel. ARGV[1]: the change's JSON (the version is prefixed here).
local version = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], version .. ' ' .. ARGV[1])
return version
