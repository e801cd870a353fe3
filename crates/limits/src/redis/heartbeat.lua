-- One instance's heartbeat: KEYS[1] is a sorted set of instance ids scored by their last beat
-- (server time, ms). ARGV: this instance's id, how long a beat counts (ms).
-- Returns the number of live instances, this one included.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
