--[[ lfeval shared limits: RENEW (heartbeat) the concurrency leases of one process.
One renewal task per model and process calls this every lease/3 with all of its live lease
ids, so heartbeats cost one round trip per model per lease/3, whatever the concurrency.
Server clock only.

KEYS[1] leases  zset lease-id -> expiry µs
ARGV[1] lease ms
ARGV[2] max_concurrent (to re-take a lease that was lost)
ARGV[3..] lease ids

Returns one status per id: 1 renewed; 2 the lease had been dropped (its holder stalled past
the expiry and another process's admit cleaned it up) and was taken again because there was
room; 0 lost and no room: that call is over the limit until it ends, and the holder should
say so. A lease that expired but is still present has not been counted away by anyone
(admit.lua drops expired leases before counting, atomically), so renewing it is safe.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease_us = tonumber(ARGV[1]) * 1000
local max_conc = tonumber(ARGV[2])
local expiry = string.format('%d', now + lease_us)
local out = {}
local cleaned = false
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', expiry, id)
    out[#out + 1] = 1
  else
    if not cleaned then
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
      cleaned = true
    end
    if redis.call('ZCARD', KEYS[1]) < max_conc then
      redis.call('ZADD', KEYS[1], expiry, id)
      out[#out + 1] = 2
    else
      out[#out + 1] = 0
    end
  end
end
local want = lease_us / 1000 + 1000
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', want))
end
return out
