-- All checks of one request, atomically, on Redis server time.
-- KEYS[i]: the state key of check i (a TAT in microseconds, as a float string).
-- ARGV[3i-2], ARGV[3i-1], ARGV[3i]: limit, period (µs), cost of check i.
-- Returns {denied (1-based index, 0 = allowed), wait µs, then remaining and reset µs per check}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
-- Slack for float rounding (TATs near 1.8e15 µs round to 0.125 µs per write), so the last
-- cell of a burst is never denied; at most 1 ms, so no cell comes more than 1 ms early.
local function slack(T) return math.min(T / 2, 1000) end
local stored, after, interval = {}, {}, {}
local denied, worst = 0, -1
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local T = period / limit
  interval[i] = T
  -- The same key twice in one request: the second sees the first's spending.
  local lag, kept = nil, nil
  for j = 1, i - 1 do
    if KEYS[j] == KEYS[i] then lag, kept = after[j], stored[j] end
  end
  if lag == nil then
    lag = 0
    local v = redis.call('GET', KEYS[i])
    if v then
      lag = tonumber(v) - now
      if lag < 0 then lag = 0 end
    end
    kept = lag
  end
  stored[i] = kept
  local next_lag = lag + cost * T
  if next_lag > period + slack(T) then
    after[i] = lag
    local wait = next_lag - period
    if wait > worst then worst, denied = wait, i end
  else
    after[i] = next_lag
  end
end
local shown = after
if denied > 0 then
  shown = stored
else
  for i = 1, n do
    if tonumber(ARGV[3 * i]) > 0 then
      -- The last write of a repeated key is its final state.
      if after[i] > 0 then
        redis.call('SET', KEYS[i], string.format('%.17g', now + after[i]),
          'PX', string.format('%d', math.ceil(after[i] / 1000) + 1))
      end
    end
  end
end
local out = {denied, math.ceil(math.max(worst, 0))}
for i = 1, n do
  local period = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i - 2])
  local remaining = math.floor((period + slack(interval[i]) - shown[i]) / interval[i])
  if remaining < 0 then remaining = 0 end
  if remaining > limit then remaining = limit end
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(shown[i])
end
return out
