-- Penalize: empties a token bucket and holds it closed (no refill) until max(the hold already
-- there, now + hold). Mirrors memory.rs `penalize`.
--
-- KEYS[1]: the token bucket. ARGV: capacity, refill per second, hold µs.
-- Returns the end of the hold (µs).

local key = KEYS[1]
local capacity, rate, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_us()
local held_until = now + hold
local _, at = read_tokens(key)
if at and at > held_until then held_until = at end
redis.call('HSET', key, 'tokens', 0, 'at', held_until)
-- Gone once the hold is over and the bucket has refilled from empty.
expire_after(key, held_until - now + time_to_full(0, capacity, rate))
return out(held_until)
