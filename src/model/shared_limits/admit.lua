--[[ lfeval shared limits: ADMIT one call of one model (all-or-nothing, one round trip).

Checks, in this order, and grants only if ALL pass; a refusal changes nothing:
  1. pause        a shared Retry-After pause is in force (KEYS[1] holds pause-until, µs)
  2. concurrency  fewer than max_concurrent live leases (KEYS[4], a sorted set
                  lease-id -> expiry µs; expired members are dropped first)
  3. rate         GCRA, requests per minute, burst 1 (KEYS[2] holds the TAT, µs)
  4. tokens       GCRA weighted by the call's estimated tokens (KEYS[3] holds the TAT, µs)
On success it adds the lease and advances both TATs (the token reservation is later
corrected by release.lua with the call's real usage).

The clock is Redis's own (TIME), never the client's: every process sees one clock.
Times are integer microseconds (≈1.8e15 today, exact in a Lua double, < 2^53).

GCRA (generic cell rate algorithm) with burst 1: the emission interval is
T = 60e6 / rpm µs. The key holds the theoretical arrival time TAT of the next call.
A call at `now` conforms iff now >= TAT - tol (tol = a small tolerance for timer lateness,
0 = strict spacing); then TAT := max(TAT, now) + T. Otherwise it must wait TAT - tol - now.
Because an idle limiter has TAT <= now, the key is given a TTL of (TAT - now) + 1 s: an
expired key means the same as an idle one, so nothing lingers.

Tokens: same algorithm with a cost: per-token interval Tt = 60e6 / tpm µs and a call of n
estimated tokens costs n*Tt. With burst B tokens (tau = max(B, n) * Tt) a call conforms iff
max(TAT, now) + n*Tt - now <= tau. B = 0 means pure pacing: the next call may start once the
previous reservation has drained; B = tpm means a one-minute bucket.

KEYS[1] pause     string, pause-until µs (expires with the pause)
KEYS[2] rate      string, TAT µs
KEYS[3] tokens    string, TAT µs
KEYS[4] leases    zset, member = lease id, score = expiry µs
ARGV[1] lease id (unique per call, e.g. host:pid:random:counter)
ARGV[2] max_concurrent (0 = no concurrency limit: no lease is taken)
ARGV[3] lease ms (how long the lease lives unless renewed)
ARGV[4] rate interval µs = 60e6 / rate_limit (0 = no rate limit)
ARGV[5] rate tolerance µs (0 = strict burst 1)
ARGV[6] estimated tokens for this call (ignored when ARGV[7] = 0)
ARGV[7] token interval µs = 60e6 / tokens_per_minute (0 = no token limit)
ARGV[8] token burst (tokens, 0 = pacing)

Returns {code, wait_ms, in_use}
  code 0 = go (lease taken if max_concurrent > 0); otherwise a bit set of why not:
       1 paused, 2 concurrency full, 4 rate, 8 tokens
  wait_ms = how long until the pause / rate / token constraints could pass (ceil, ms);
       with only bit 2 set it is 0 and the client polls (a lease frees when a call ends)
  in_use = live leases after the call (for progress display and tests)
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local lease_id = ARGV[1]
local max_conc = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[3]) * 1000
local rate_T = tonumber(ARGV[4])
local rate_tol = tonumber(ARGV[5])
local tokens = tonumber(ARGV[6])
local tok_T = tonumber(ARGV[7])
local tok_burst = tonumber(ARGV[8])

local code, wait_us = 0, 0

-- 1. shared pause (set by pause.lua with max semantics; the key expires when it ends)
local pause_until = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause_until > now then
  code = code + 1
  wait_us = math.max(wait_us, pause_until - now)
end

-- 2. concurrency leases: forget leases whose holder stopped renewing them (died)
local in_use = 0
if max_conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  in_use = redis.call('ZCARD', KEYS[4])
  if in_use >= max_conc then
    code = code + 2
  end
end

-- 3. requests per minute, GCRA burst 1
local rate_tat = 0
if rate_T > 0 then
  rate_tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
  if now < rate_tat - rate_tol then
    code = code + 4
    wait_us = math.max(wait_us, rate_tat - rate_tol - now)
  end
end

-- 4. tokens per minute, GCRA weighted by the estimate
local tok_tat = 0
if tok_T > 0 then
  tok_tat = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), now)
  local tau = math.max(tok_burst, tokens) * tok_T
  local new_tat = tok_tat + tokens * tok_T
  if new_tat - now > tau then
    code = code + 8
    wait_us = math.max(wait_us, new_tat - tau - now)
  end
end

if code ~= 0 then
  return {code, math.ceil(wait_us / 1000), in_use}
end

-- every check passed: take the lease and advance the TATs
if max_conc > 0 then
  redis.call('ZADD', KEYS[4], string.format('%d', now + lease_us), lease_id)
  in_use = in_use + 1
  local want = lease_us / 1000 + 1000
  if redis.call('PTTL', KEYS[4]) < want then
    redis.call('PEXPIRE', KEYS[4], string.format('%d', want))
  end
end
if rate_T > 0 then
  local tat = rate_tat + rate_T
  redis.call('SET', KEYS[2], string.format('%d', tat),
             'PX', string.format('%d', math.ceil((tat - now) / 1000) + 1000))
end
if tok_T > 0 then
  local tat = tok_tat + tokens * tok_T
  redis.call('SET', KEYS[3], string.format('%d', tat),
             'PX', string.format('%d', math.ceil((tat - now) / 1000) + 1000))
end
return {0, 0, in_use}
