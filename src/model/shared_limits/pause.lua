--[[ lfeval shared limits: the shared Retry-After PAUSE of one model.

An endpoint answered "Retry-After: N": every process should hold new calls of this model
until then. The pause-until time (µs, server clock) lives in one key that expires exactly
when the pause ends, so admit.lua only has to compare it with now. Setting has max
semantics: a shorter pause never cuts a longer one short (several shards may see several
429s with different Retry-After values at once).

KEYS[1] pause   string, pause-until µs
ARGV[1] 'set' or 'get'
ARGV[2] (set) pause ms from now (relative, so no client clock is involved)

Returns the pause still in force, in ms (ceil; 0 = none).
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == 'set' then
  local ms = tonumber(ARGV[2])
  if ms and ms > 0 then
    local want = now + ms * 1000
    if want > cur then
      redis.call('SET', KEYS[1], string.format('%d', want), 'PX', string.format('%d', math.ceil(ms)))
      cur = want
    end
  end
elseif ARGV[1] ~= 'get' then
  return redis.error_reply('pause.lua: ARGV[1] must be set or get')
end
if cur <= now then return 0 end
return math.ceil((cur - now) / 1000)
