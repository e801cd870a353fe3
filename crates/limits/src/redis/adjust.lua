-- Settles a reservation: moves one TAT by delta units, never before server time now.
-- KEYS[1]: the state key. ARGV: limit, period (µs), delta (may be negative).
-- Returns the lag after, in µs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[2]) / tonumber(ARGV[1])
local lag = 0
local v = redis.call('GET', KEYS[1])
if v then
  lag = tonumber(v) - now
  if lag < 0 then lag = 0 end
end
lag = lag + tonumber(ARGV[3]) * T
if lag <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.17g', now + lag),
  'PX', string.format('%d', math.ceil(lag / 1000) + 1))
return math.ceil(lag)
