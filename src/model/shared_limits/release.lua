--[[ lfeval shared limits: RELEASE a call: drop its lease and settle its token reservation.

Token settle: admit.lua reserved `estimate` tokens by moving the token TAT forward by
estimate*Tt; now that the response reports the real usage, move it by (actual - estimate)*Tt.
More than estimated -> the TAT moves later (others wait longer: the debt is paid).
Less -> it moves earlier (a refund), but never before `now`: an idle bucket cannot bank
credit beyond its burst (a TAT in the past means the same as `now`).

KEYS[1] leases   zset lease-id -> expiry µs
KEYS[2] tokens   string, TAT µs
ARGV[1] lease id ('' = no lease was taken)
ARGV[2] token delta = actual - estimate (0 = nothing to settle)
ARGV[3] token interval µs = 60e6 / tokens_per_minute (0 = no token limit)

Returns {lease_removed (0/1), token_tat_shift_ms}
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local removed = 0
if ARGV[1] ~= '' then
  removed = redis.call('ZREM', KEYS[1], ARGV[1])
end
local shift = 0
local delta = tonumber(ARGV[2])
local tok_T = tonumber(ARGV[3])
if tok_T > 0 and delta ~= 0 then
  local old = tonumber(redis.call('GET', KEYS[2]) or '0')
  if old < now then old = now end
  local tat = math.max(old + delta * tok_T, now)
  shift = tat - old
  if tat > now then
    redis.call('SET', KEYS[2], string.format('%d', tat),
               'PX', string.format('%d', math.ceil((tat - now) / 1000) + 1000))
  else
    redis.call('DEL', KEYS[2])
  end
end
local s = shift / 1000
if s >= 0 then s = math.ceil(s) else s = -math.ceil(-s) end
return {removed, s}
