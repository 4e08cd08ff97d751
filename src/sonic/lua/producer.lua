-- swss-common's ProducerStateTable set/del, in one atomic script, run on
-- the APPL_DB connection (the database is the connection's own: no SELECT,
-- so APPL_DB may live on an instance of its own).
-- KEYS[1]: "<T>_CHANNEL@<db>", KEYS[2]: "<T>_KEY_SET", KEYS[3]: "_<T>:<key>",
-- KEYS[4]: "<T>_DEL_SET"
-- ARGV[1]: key, ARGV[2]: "1" for a delete (before any set)
-- ARGV[3..]: field, value pairs
-- The consumer is woken (PUBLISH "G") only when the key was not already
-- pending, exactly as swss-common does.
-- Refuse before writing anything if a key has the wrong type: a script's
-- writes before an error are not undone, and a half-done set would leave
-- the key in the key set without a notification.
for i = 2, 4 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    local want = (i == 3) and 'hash' or 'set'
    if kind ~= 'none' and kind ~= want then
        return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. want)
    end
end
local added = redis.call('SADD', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
    redis.call('SADD', KEYS[4], ARGV[1])
    redis.call('DEL', KEYS[3])
end
-- unpack() is bounded by Lua's C stack (about 8000 values): a hash with
-- thousands of fields goes in slices.
local slice = 1000
for i = 3, #ARGV, slice do
    redis.call('HSET', KEYS[3], unpack(ARGV, i, math.min(i + slice - 1, #ARGV)))
end
if added > 0 then
    redis.call('PUBLISH', KEYS[1], 'G')
end
return added
