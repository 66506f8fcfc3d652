-- Usage: how full buckets are at Redis time, changing nothing. Mirrors memory.rs `usage_of`.
--
-- KEYS[i]: bucket i. ARGV, 3 per bucket: 'tb', capacity, refill per second
--                                     or 'dw', window ms, ''
-- Returns 3 strings per bucket: in use, µs until full (token buckets) or empty (windows),
-- held until µs.

local now = now_us()
local out = {}

for i, key in ipairs(KEYS) do
  local a = (i - 1) * 3
  local used, until_full, held_until = 0, 0, 0
  if ARGV[a + 1] == 'tb' then
    local capacity, rate = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local tokens, at = read_tokens(key)
    if tokens then
      local lvl = level(tokens, at, now, capacity, rate)
      used = capacity - lvl
      until_full = math.max(at - now, 0) + time_to_full(lvl, capacity, rate)
      if at > now then held_until = at end
    end
  elseif ARGV[a + 1] == 'dw' then
    local window_us = tonumber(ARGV[a + 2]) * 1000
    used = redis.call('ZCOUNT', key, '(' .. fmt(now - window_us), '+inf')
    if used > 0 then
      -- Empty once the newest member ages out.
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      local t = tonumber(newest[2])
      if not t then error('ratelimit: malformed distinct window ' .. key) end
      until_full = t + window_us - now
    end
  else
    error('ratelimit: unknown bucket kind ' .. tostring(ARGV[a + 1]))
  end
  out[#out + 1] = fmt(used)
  out[#out + 1] = fmt(until_full)
  out[#out + 1] = fmt(held_until)
end

return out
