-- STATE_DB PORT_TABLE|<port>, written only while the port is configured.
-- KEYS[1]: APPL_DB "PORT_TABLE:<port>" (the consumed key orchagent owns)
-- KEYS[2]: STATE_DB "PORT_TABLE|<port>"
-- ARGV[1]: APPL_DB id, ARGV[2]: STATE_DB id, ARGV[3]: "1" to delete first
-- ARGV[4..]: field, value pairs
-- Returns the number of fields changed, -1 if the port is not configured
-- (nothing set), -2 for a pure delete that removed the row, -3 for a pure
-- delete of a row that did not exist.
-- Only fields whose value differs are written, so a state that did not
-- change costs no write and no keyspace event.
redis.call('SELECT', ARGV[2])
if ARGV[3] == '1' then
    -- DEL only an existing row: a no-op DEL still shows in MONITOR, and a
    -- warm restart with nothing changed must show no write at all.
    local existed = redis.call('EXISTS', KEYS[2]) == 1
    if existed then
        redis.call('DEL', KEYS[2])
    end
    if #ARGV < 4 then
        return existed and -2 or -3
    end
end
redis.call('SELECT', ARGV[1])
local configured = redis.call('EXISTS', KEYS[1]) == 1
redis.call('SELECT', ARGV[2])
if not configured then
    return -1
end
local names = {}
for i = 4, #ARGV, 2 do
    names[#names + 1] = ARGV[i]
end
local current = redis.call('HMGET', KEYS[2], unpack(names))
local changed = {}
for j = 1, #names do
    local value = ARGV[3 + 2 * j]
    if current[j] ~= value then
        changed[#changed + 1] = names[j]
        changed[#changed + 1] = value
    end
end
if #changed > 0 then
    redis.call('HSET', KEYS[2], unpack(changed))
end
return #changed / 2
