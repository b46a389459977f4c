"""
The Lua scripts of the fleet's store (:mod:`.store`): each runs atomically in Redis, so that what must not
race between relays (a reservation, a claim, a number) is decided in one step.
"""

from __future__ import annotations

from typing import Final

#: KEYS: kernels, pending. ARGV: reservation, its value (``<expiry ms> <seal>``), now (ms), max kernels, then
#: the field, value pairs of reservations found forged (removed unless they changed meanwhile). A value whose
#: expiry is not a number is no reservation.
RESERVE: Final = """
for i = 5, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[2], ARGV[i]) end
end
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local expiry = tonumber(string.match(all[i + 1], '^%d+') or '')
  if not expiry or expiry < tonumber(ARGV[3]) then redis.call('HDEL', KEYS[2], all[i]) end
end
local limit = tonumber(ARGV[4])
if limit >= 0 and redis.call('SCARD', KEYS[1]) + redis.call('HLEN', KEYS[2]) >= limit then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

#: KEYS: kernels, pending, kernel record. ARGV: the kernel's member, reservation, then field, value pairs.
REGISTER: Final = """
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""

#: KEYS: kernel record, the old owner's lease. ARGV: the old owner, the new owner.
#: The kernel passes to the new owner only if the old one still owns it and its lease has expired.
CLAIM: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
"""

#: KEYS: kernel record. ARGV: the old owner, the new owner. As ``CLAIM``, whatever the old owner's lease: for
#: an owner known dead (its process is gone) whose lease has not run out yet.
TAKE_OVER: Final = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
"""

#: KEYS: kernel record. ARGV: owner.
SET_OWNER: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return 1
"""

#: KEYS: the kernel's marks, the session's mark. ARGV: session, value, ttl (ms), most marks, mark prefix.
#: A mark is ``<relay_seq> <parent msg_id>``: the freshest wins (a relay's late save never moves it back).
SAVE_MARK: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local old = redis.call('GET', KEYS[2])
local old_seq = old and tonumber(string.match(old, '^%d+')) or nil
local new_seq = tonumber(string.match(ARGV[2], '^%d+'))
if old_seq and new_seq and old_seq > new_seq then
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  for _, session in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('DEL', ARGV[5] .. session)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""

#: KEYS: kept-marks, settling-marks, settling-relays. ARGV: kept-marks's (sealed) value, how long the relays may
#: take to save their marks again (ms), then the relays expected to. Redis that lost kept-marks (it restarted
#: empty) is settling until each of them has (``SETTLE_MARKS``) or that time has passed. Returns kept-marks's
#: value: a relay that finds another than it last saw knows Redis lost the marks.
KEEP_MARKS: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
  for i = 3, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
"""

#: KEYS: kept-marks, settling-marks, settling-relays. ARGV: kept-marks's value as the relay found it, the relay.
#: The relay saved its marks again since Redis lost them: the last one expected ends the settling.
SETTLE_MARKS: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SREM', KEYS[3], ARGV[2])
if redis.call('SCARD', KEYS[3]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
"""

#: KEYS: kernels, a kernel record. ARGV: the kernel's member, then the field, value pairs of its record as a
#: relay read it (none: it had none), which did not open. If the kernel is still listed with that record, it
#: is no kernel of the fleet's: both go (1).
FORGET_UNRECORDED: Final = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[2]) * 2 ~= #ARGV - 1 then return 0 end
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"""

#: KEYS: a key. ARGV: a value. Deletes the key if it still holds that value (one found forged).
FORGET_FORGED: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: the kernel's marks. ARGV: mark prefix. Forgets every mark of a kernel.
FORGET_MARKS: Final = """
for _, session in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do redis.call('DEL', ARGV[1] .. session) end
redis.call('DEL', KEYS[1])
return 1
"""

#: KEYS: seq, seen, journal, window. ARGV: msg_id, payload, time (s), most entries, most bytes, longest age
#: (s), the submitter's last number for the kernel (-1: none yet), whether the submitter owns the kernel, the
#: msg_id of the message before it that the submitter had not seen numbered ('' if none), whether it waited
#: long enough for a relay with history (see -4 below).
#: Numbers one iopub message for the whole fleet, once however many relays submit it, whenever they do:
#: ``seen`` knows the msg_id of every message the stream keeps, and ``window``'s floor is a number below
#: which Redis does not know every message numbered: the last one trimmed, or the last a relay had when it
#: came past Redis's count (a numbering Redis lost, started again by the owner only: -2 for the others, who
#: ask again; or numbers a relay gave alone). A submitter whose last number is below the floor may be late
#: for a message numbered there: refused (-1), never numbered twice. A message whose predecessor is not
#: numbered yet waits for it (-3, asked again): the fleet numbers a kernel's messages in the kernel's order.
#: A relay's first message of a running kernel (no number, no predecessor, not the owner) waits too (-4) for a
#: relay with history to number it (the message may follow others still on their way), until it waited enough.
#: The stream is trimmed oldest first to the entries, bytes and age given (one entry, the newest, is kept).
NUMBER: Final = """
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then return tonumber(known) end
local after = tonumber(ARGV[7])
local current = redis.call('GET', KEYS[1])
if not current and ARGV[8] ~= '1' then return -2 end
if ARGV[9] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[9]) == 0 then return -3 end
if after < 0 and ARGV[8] ~= '1' and ARGV[9] == '' and ARGV[10] ~= '1' then return -4 end
current = tonumber(current or '0')
if after > current then
  redis.call('SET', KEYS[1], after)
  redis.call('HSET', KEYS[4], 'floor', after)
  current = after
end
if after >= 0 and after < tonumber(redis.call('HGET', KEYS[4], 'floor') or '0') then return -1 end
local seq = current + 1
redis.call('SET', KEYS[1], seq)
redis.call('HSET', KEYS[2], ARGV[1], seq)
redis.call('XADD', KEYS[3], '0-' .. seq, 'm', ARGV[2], 't', ARGV[3], 'i', ARGV[1])
local size = redis.call('HINCRBY', KEYS[4], 'bytes', #ARGV[2])
local now, most, most_bytes, age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local count = redis.call('XLEN', KEYS[3])
while count > 1 do
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  local fields = {}
  for i = 1, #oldest[2], 2 do fields[oldest[2][i]] = oldest[2][i + 1] end
  if count <= most and size <= most_bytes and now - tonumber(fields['t'] or now) <= age then break end
  redis.call('XDEL', KEYS[3], oldest[1])
  if fields['i'] then redis.call('HDEL', KEYS[2], fields['i']) end
  size = redis.call('HINCRBY', KEYS[4], 'bytes', -#(fields['m'] or ''))
  local trimmed = tonumber(string.sub(oldest[1], 3))
  if trimmed > tonumber(redis.call('HGET', KEYS[4], 'floor') or '0') then
    redis.call('HSET', KEYS[4], 'floor', trimmed)
  end
  count = count - 1
end
return seq
"""

#: KEYS: seq, window, seen, journal. ARGV: the last number a relay gave out itself (while Redis was away),
#: whether it owns the kernel, the time (s), then the msg_id, number pairs it gave alone, oldest first.
#: Each pair past the fleet's count is registered (the msg_id in ``seen``, an entry without its message in the
#: stream, trimmed as any): other relays' submissions of that message get that number. The fleet's count goes
#: past the last, and its floor past any number there that Redis does not know the message of. A numbering
#: Redis lost is left for the owner to start again (0), or started by the owner's bump.
BUMP: Final = """
local current = redis.call('GET', KEYS[1])
if not current and ARGV[2] ~= '1' then return 0 end
current = tonumber(current or '0')
local last = tonumber(ARGV[1])
local mine = {}
for i = 4, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  local known = redis.call('HGET', KEYS[3], ARGV[i])
  if not known and n > current then
    redis.call('HSET', KEYS[3], ARGV[i], n)
    redis.pcall('XADD', KEYS[4], '0-' .. n, 't', ARGV[3], 'i', ARGV[i])
    known = n
  end
  if tonumber(known) == n then mine[n] = true end
end
if last <= current then return current end
redis.call('SET', KEYS[1], last)
local floor = last
while floor > current and mine[floor] do floor = floor - 1 end
if floor > current and floor > tonumber(redis.call('HGET', KEYS[2], 'floor') or '0') then
  redis.call('HSET', KEYS[2], 'floor', floor)
end
return last
"""

__all__ = [
    "BUMP",
    "CLAIM",
    "FORGET_FORGED",
    "FORGET_MARKS",
    "FORGET_UNRECORDED",
    "KEEP_MARKS",
    "NUMBER",
    "REGISTER",
    "RESERVE",
    "SAVE_MARK",
    "SETTLE_MARKS",
    "SET_OWNER",
    "TAKE_OVER",
]
