//! The Lua scripts by which the batch store changes a batch in one step on Redis: each reads
//! what it must find (the lease holder, `next`, the status) and writes only if it finds it,
//! so that two gateways' runners, or a runner and a late reply, cannot both count a line.

// The first outcome of a line wins; only a live batch that has not ended is counted (a task
// cancelled at its end may still answer). A line refused by the runner also counts as
// refused (never published), so `outstanding` stays exact, and only while that runner
// holds the lease: one whose lease lapsed must not refuse a line its successor publishes.
// KEYS: the batch, its outcomes, its lease; ARGV: the line, the outcome, its counter, the
// TTL, the refusing runner ('' for a reply).
pub(super) const RECORD: &str = r"
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[5] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'completed' or status == 'failed' or status == 'expired'
  or status == 'cancelled' then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[1], 'refused', 1) end
return 1
";

// Moves a batch's `next` on from where its runner read it, counting what it published,
// only while that runner holds the lease and nobody moved `next` meanwhile: a runner whose
// lease lapsed during a slow publish must not count a line its successor counts too.
// KEYS: the batch, its lease; ARGV: the holder, the `next` it read, the new `next`, published.
pub(super) const ADVANCE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'next') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'published', ARGV[4])
return 1
";

pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

pub(super) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

// Ends a batch still in the status its runner read (ARGV[1]) with status ARGV[2], object
// ARGV[3], and the counts ARGV[4] (completed) and ARGV[5] (failed) of the outcomes its files
// hold: a reply recorded after the runner read them is then in neither the files nor the
// counts. KEYS: the batch.
pub(super) const END_COUNTED: &str = r"
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'object', ARGV[3], 'completed', ARGV[4],
  'failed', ARGV[5])
return 1
";
