-- Acquire: debits every bucket of one request, or none. Every bucket's decision is made first
-- (reading only), then, if none limits, the writes. Mirrors memory.rs `decide`.
--
-- KEYS[i]: bucket i, all under one hash tag ({scope}).
-- ARGV, 5 per bucket:  'tb', capacity, refill per second, cost, ''
--                  or  'dw', limit (0: unlimited), window ms, member, check only ('1' or '0')
-- Returns 4 strings per bucket: remaining, limiting ('1' or '0'), retry after µs, held until µs.

local now = now_us()
local out, writes, allowed = {}, {}, true

for i, key in ipairs(KEYS) do
  local a = (i - 1) * 5
  local kind = ARGV[a + 1]
  local remaining, limiting, retry, held_until

  if kind == 'tb' then
    local capacity, rate, cost = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local tokens, at = read_tokens(key)
    if not tokens then tokens, at = capacity, now end
    held_until = 0
    if at > now then held_until = at end
    local lvl = level(tokens, at, now, capacity, rate)
    retry = wait(tokens, at, now, capacity, rate, cost)
    -- A held bucket denies even a check (cost 0): the wait is the rest of the hold.
    limiting = retry > 0
    remaining = lvl
    if not limiting then remaining = lvl - cost end
    if not limiting and cost > 0 then
      writes[#writes + 1] = { key = key, tokens = remaining, ttl = time_to_full(remaining, capacity, rate) }
    end

  elseif kind == 'dw' then
    local limit, window_us = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]) * 1000
    local member, check_only = ARGV[a + 4], ARGV[a + 5] == '1'
    -- Members admitted at or before `since` have aged out.
    local since = fmt(now - window_us)
    local count = redis.call('ZCOUNT', key, '(' .. since, '+inf')
    local score = redis.call('ZSCORE', key, member)
    local known = score and tonumber(score) > now - window_us or false
    limiting = not known and limit ~= 0 and count >= limit
    retry = 0
    if limiting then
      -- The (count - limit + 1)-th oldest must age out.
      local nth = redis.call('ZRANGEBYSCORE', key, '(' .. since, '+inf', 'WITHSCORES', 'LIMIT', fmt(count - limit), 1)
      local t = tonumber(nth[2])
      if not t then error('ratelimit: malformed distinct window ' .. key) end
      retry = t + window_us - now
    end
    local admitted = not limiting and not check_only
    local after = count
    if admitted and not known then after = count + 1 end
    if limit == 0 then
      remaining = math.huge
    else
      remaining = math.max(limit - after, 0)
    end
    if admitted then
      writes[#writes + 1] = { key = key, member = member, since = since, ttl = window_us }
    end
    held_until = 0

  else
    error('ratelimit: unknown bucket kind ' .. tostring(kind))
  end

  if limiting then allowed = false end
  out[#out + 1] = fmt(remaining)
  out[#out + 1] = limiting and '1' or '0'
  out[#out + 1] = fmt(retry)
  out[#out + 1] = fmt(held_until)
end

-- All or nothing: a denied request leaves every bucket as it was.
if allowed then
  for _, w in ipairs(writes) do
    if w.tokens then
      redis.call('HSET', w.key, 'tokens', fmt(w.tokens), 'at', fmt(now))
    else
      redis.call('ZREMRANGEBYSCORE', w.key, '-inf', w.since)
      redis.call('ZADD', w.key, fmt(now), w.member)
    end
    expire_after(w.key, w.ttl)
  end
end

return out
