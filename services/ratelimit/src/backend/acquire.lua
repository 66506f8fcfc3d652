-- Acquire: decides one or more acquires of one scope, in order, each as if it were alone (it
-- sees what the ones before it wrote, at the same `now`). Each debits every bucket it names, or
-- none: its decisions are made first (reading only), then, if none limits, its writes. Mirrors
-- memory.rs `decide`. A batch is how concurrent Acquire calls share one script call.
--
-- KEYS: the buckets of every acquire, in order, all under one hash tag ({scope}).
-- ARGV[1]: n, the number of acquires; ARGV[2 .. n + 1]: how many buckets each has; then 5 per
-- bucket:  'tb', capacity, refill per second, cost, ''
--      or  'dw', limit (0: unlimited), window ms, member, check only ('1' or '0')
-- Returns 4 values per bucket (see `out`): remaining, limiting (1 or 0), retry after µs, held
-- until µs.

local now = now_us()
local reply = {}

-- Decides bucket `key` with its 5 arguments from ARGV[a + 1]: remaining, limiting, retry
-- after, held until, and the write to make if the acquire is allowed (or nil).
local function decide(key, a)
  local kind = ARGV[a + 1]
  if kind == 'tb' then
    local capacity, rate, cost = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local tokens, at = read_tokens(key)
    if not tokens then tokens, at = capacity, now end
    local held_until = 0
    if at > now then held_until = at end
    local lvl = level(tokens, at, now, capacity, rate)
    local retry = wait(tokens, at, now, capacity, rate, cost)
    -- A held bucket denies even a check (cost 0): the wait is the rest of the hold.
    local limiting = retry > 0
    local remaining, write = lvl, nil
    if not limiting then remaining = lvl - cost end
    if not limiting and cost > 0 then
      write = { key = key, tokens = remaining, ttl = time_to_full(remaining, capacity, rate) }
    end
    return remaining, limiting, retry, held_until, write

  elseif kind == 'dw' then
    local limit, window_us = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]) * 1000
    local member, check_only = ARGV[a + 4], ARGV[a + 5] == '1'
    -- Members admitted at or before `since` have aged out.
    local since = digits(now - window_us)
    local count = redis.call('ZCOUNT', key, '(' .. since, '+inf')
    local score = redis.call('ZSCORE', key, member)
    local known = score and tonumber(score) > now - window_us or false
    local limiting = not known and limit ~= 0 and count >= limit
    local retry = 0
    if limiting then
      -- The (count - limit + 1)-th oldest must age out.
      local nth = redis.call('ZRANGEBYSCORE', key, '(' .. since, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
      local t = tonumber(nth[2])
      if not t then error('ratelimit: malformed distinct window ' .. key) end
      retry = t + window_us - now
    end
    local admitted = not limiting and not check_only
    local after = count
    if admitted and not known then after = count + 1 end
    local remaining = math.huge
    if limit ~= 0 then remaining = math.max(limit - after, 0) end
    local write = nil
    if admitted then
      write = { key = key, member = member, since = since, ttl = window_us }
    end
    return remaining, limiting, retry, 0, write
  end
  error('ratelimit: unknown bucket kind ' .. tostring(kind))
end

local acquires = tonumber(ARGV[1])
local key_at, arg_at = 1, 1 + acquires
for n = 1, acquires do
  local writes, allowed = {}, true
  for i = key_at, key_at + tonumber(ARGV[1 + n]) - 1 do
    local remaining, limiting, retry, held_until, write = decide(KEYS[i], arg_at)
    arg_at = arg_at + 5
    if limiting then allowed = false end
    writes[#writes + 1] = write
    reply[#reply + 1] = out(remaining)
    reply[#reply + 1] = limiting and 1 or 0
    reply[#reply + 1] = out(retry)
    reply[#reply + 1] = out(held_until)
  end
  key_at = key_at + tonumber(ARGV[1 + n])

  -- All or nothing: a denied acquire leaves every bucket as it was.
  if allowed then
    for _, w in ipairs(writes) do
      if w.tokens then
        redis.call('HSET', w.key, 'tokens', w.tokens, 'at', now)
      else
        redis.call('ZREMRANGEBYSCORE', w.key, '-inf', w.since)
        redis.call('ZADD', w.key, now, w.member)
      end
      expire_after(w.key, w.ttl)
    end
  end
end

return reply
