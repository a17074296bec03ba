-- A store from before sources: move `categories` (category -> generation) into `lists` as source `legacy`.
-- The sets stay where they are (`cat:{category}:{generation}`), so this is one cheap, atomic step.
-- KEYS: categories (legacy), lists. Returns how many lists moved (0: nothing to do).
local legacy = redis.call('HGETALL', KEYS[1])
for i = 1, #legacy, 2 do
  if redis.call('HEXISTS', KEYS[2], legacy[i] .. ':legacy') == 0 then
    redis.call('HSET', KEYS[2], legacy[i] .. ':legacy', legacy[i + 1])
  end
end
if #legacy > 0 then
  redis.call('DEL', KEYS[1])
end
return #legacy / 2
