-- Shared head of the rate-limit scripts (prepended to each by redis.rs): Redis TIME as the
-- one clock, and model::token_bucket line by line, so Redis and memory give the same numbers.

-- Microseconds since the Unix epoch, from the server: every replica sees one clock.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A number for the reply. Redis turns a Lua number into an integer reply, truncating it, so
-- whole numbers (times, counts, flags) go back as numbers and anything else as a string that
-- round-trips the double ('%.17g'). Numbers passed to redis.call need no care: Redis formats
-- them exactly itself.
local function out(x)
  if x == math.huge then return 'inf' end
  if x == math.floor(x) and x > -9007199254740992 and x < 9007199254740992 then return x end
  return string.format('%.17g', x)
end

-- An exact decimal string of a whole number of µs, for score ranges ('(' .. it).
local function digits(x)
  return string.format('%.17g', x)
end

-- A token bucket as last left (tokens, at µs), or nil when missing (a missing bucket is full).
local function read_tokens(key)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  if not state[1] and not state[2] then return nil end
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if not (tokens and at) then error('ratelimit: malformed token bucket ' .. key) end
  return tokens, at
end

-- token_bucket::level: no refill while held (now <= at).
local function level(tokens, at, now, capacity, rate)
  if now <= at then return math.min(tokens, capacity) end
  return math.min(tokens + (now - at) * rate / 1e6, capacity)
end

-- token_bucket::wait: µs until `cost` tokens are there, rounded up so the level has them then.
local function wait(tokens, at, now, capacity, rate, cost)
  local start = math.max(now, at)
  local from = level(tokens, at, start, capacity, rate)
  if from >= cost then return start - now end
  -- More than the bucket holds never comes (the loop below would not end).
  if cost > capacity then return math.huge end
  local ready = start + math.ceil((cost - from) * 1e6 / rate)
  -- Rounding may leave the level a hair short: then it is there 1 µs later. The bound only
  -- keeps Redis safe where doubles stop counting single µs (beyond 2^53).
  local steps = 0
  while level(tokens, at, ready, capacity, rate) < cost and steps < 1000 do
    ready = ready + 1
    steps = steps + 1
  end
  return ready - now
end

-- token_bucket::time_to_full.
local function time_to_full(lvl, capacity, rate)
  return math.ceil(math.max(capacity - lvl, 0) * 1e6 / rate)
end

-- Lets a key expire once it says nothing a missing one would not: never before `us` µs from
-- now (whole ms, plus one). A TTL too large for Redis (or not a number) keeps the key.
local function expire_after(key, us)
  local ms = math.ceil(us / 1000) + 1
  if ms <= 1e15 then
    redis.call('PEXPIRE', key, ms)
  else
    redis.call('PERSIST', key)
  end
end
