-- swss-common's ProducerStateTable set/del, in one atomic script.
-- KEYS[1]: "<T>_CHANNEL@<db>", KEYS[2]: "<T>_KEY_SET", KEYS[3]: "_<T>:<key>",
-- KEYS[4]: "<T>_DEL_SET"
-- ARGV[1]: db id, ARGV[2]: key, ARGV[3]: "1" for a delete (before any set)
-- ARGV[4..]: field, value pairs
-- The consumer is woken (PUBLISH "G") only when the key was not already
-- pending, exactly as swss-common does.
redis.call('SELECT', ARGV[1])
local added = redis.call('SADD', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
    redis.call('SADD', KEYS[4], ARGV[2])
    redis.call('DEL', KEYS[3])
end
if #ARGV >= 5 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 4))
end
if added > 0 then
    redis.call('PUBLISH', KEYS[1], 'G')
end
return added
