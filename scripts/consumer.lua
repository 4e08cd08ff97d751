-- A stand-in for orchagent's ConsumerStateTable pop, as one atomic script.
--
-- Usage (against APPL_DB, i.e. after SELECT 0):
--   EVAL "<this script>" 0 PORT_TABLE [separator]
--
-- For table T (ARGV[1]) and separator S (ARGV[2], ":" when omitted):
--   * every key k pending in the set "T_KEY_SET" is taken out of it;
--   * if k is also in "T_DEL_SET", it leaves that set and "T<S>k" is deleted
--     (a del() from the producer, applied before any later set());
--   * the fields staged in "_T<S>k" are copied into "T<S>k", and the staging
--     hash is deleted.
-- Returns the number of keys processed. This mirrors what swss-common's
-- consumer_state_table_pops.lua does, minus returning the entries.

local tbl = ARGV[1]
local sep = ARGV[2] or ':'
if tbl == nil or tbl == '' then
    return redis.error_reply('usage: EVAL script 0 <table> [separator]')
end

local key_set = tbl .. '_KEY_SET'
local del_set = tbl .. '_DEL_SET'

local pending = redis.call('SCARD', key_set)
if pending == 0 then
    return 0
end
local keys = redis.call('SPOP', key_set, pending)

for _, k in ipairs(keys) do
    local final = tbl .. sep .. k
    local staged = '_' .. tbl .. sep .. k
    if redis.call('SREM', del_set, k) == 1 then
        redis.call('DEL', final)
    end
    local fv = redis.call('HGETALL', staged)
    -- HSET in slices, to stay well below Lua's unpack() limit.
    local i = 1
    while i <= #fv do
        local last = math.min(i + 199, #fv)
        redis.call('HSET', final, unpack(fv, i, last))
        i = last + 1
    end
    redis.call('DEL', staged)
end

return #keys
