-- Usage: how full buckets are at Redis time, changing nothing. Mirrors memory.rs `usage_of`.
--
-- KEYS[i]: bucket i. ARGV, 3 per bucket: 'tb', capacity, refill per second
--                                     or 'dw', window ms, ''
-- Returns 3 values per bucket (see `out`): in use, µs until full (token buckets) or empty (windows),
-- held until µs.

local now = now_us()
local reply = {}

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
    used = redis.call('ZCOUNT', key, '(' .. digits(now - window_us), '+inf')
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
  reply[#reply + 1] = out(used)
  reply[#reply + 1] = out(until_full)
  reply[#reply + 1] = out(held_until)
end

return reply
