//! Leases on etcd's model, sans-IO: the replicated table (which leases exist, their TTLs,
//! the keys they carry, the fencing high-water marks of protected keys) and the leader's
//! timers (when each lease runs out). The table changes only by log entries, so every
//! replica agrees on it; the timers exist only on a range's leader and read an explicit
//! `now` (milliseconds of the node's monotonic clock), so the model and the node run the
//! same code.
//!
//! Why the split: a keep-alive is not a log entry (10,000 leases renewed every second would
//! be 10,000 entries a second), so how long a lease has left is known only where the
//! keep-alives arrive, at the leader. A new leader cannot know when the last keep-alive
//! reached the old one, so it starts every lease afresh and adds an election timeout: the
//! old leader may have renewed a lease just before it lost touch, and the holder is owed
//! its full TTL from then (etcd's lessor `Promote` does the same). The TTL is therefore a
//! minimum, never a promise of expiry on time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A lease's id names the range that granted it in its top bits, so that a keep-alive or
/// a revoke can be routed by id alone; the low bits are the grant entry's index.
pub const LEASE_GROUP_SHIFT: u32 = 40;

/// The id of the lease granted by the entry at `index` of range `group`'s log.
pub fn lease_id(group: u64, index: u64) -> u64 {
    (group << LEASE_GROUP_SHIFT) | (index & ((1 << LEASE_GROUP_SHIFT) - 1))
}

/// The range a lease id names.
pub fn lease_group(id: u64) -> u64 {
    id >> LEASE_GROUP_SHIFT
}

/// One lease as the log knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaseRecord {
    pub ttl_ms: u64,
    /// Keys that go when the lease does.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Why a write naming a lease or a fencing token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// The lease expired, was revoked, or never existed.
    NotFound { lease: u64 },
    /// A fencing token below one the key has already accepted: a holder whose lock was
    /// taken over (it paused past its TTL, say) is writing late.
    StaleToken {
        key: Vec<u8>,
        token: u64,
        fence: u64,
    },
}

impl std::fmt::Display for LeaseRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseRefusal::NotFound { lease } => write!(
                f,
                "lease {lease} not found: it expired or was revoked (grant a new one)"
            ),
            LeaseRefusal::StaleToken { key, token, fence } => write!(
                f,
                "stale fencing token {token} for key {:?}: it has accepted token {fence}, so \
                 the lock was taken by a later holder; not applied",
                String::from_utf8_lossy(key)
            ),
        }
    }
}

/// The replicated lease state of one range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaseTable {
    leases: BTreeMap<u64, LeaseRecord>,
    /// key -> the lease carrying it.
    attached: BTreeMap<Vec<u8>, u64>,
    /// key -> the highest fencing token a write to it has carried.
    fences: BTreeMap<Vec<u8>, u64>,
}

impl LeaseTable {
    pub fn grant(&mut self, id: u64, ttl_ms: u64) {
        self.leases.entry(id).or_insert(LeaseRecord {
            ttl_ms,
            keys: BTreeSet::new(),
        });
    }

    pub fn get(&self, id: u64) -> Option<&LeaseRecord> {
        self.leases.get(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = (u64, &LeaseRecord)> {
        self.leases.iter().map(|(&id, record)| (id, record))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Removes the lease; the keys it carried, for the caller to delete in the same entry.
    pub fn revoke(&mut self, id: u64) -> Option<BTreeSet<Vec<u8>>> {
        let record = self.leases.remove(&id)?;
        for key in &record.keys {
            self.attached.remove(key);
        }
        Some(record.keys)
    }

    /// The lease carrying `key`, if one does.
    pub fn lease_of(&self, key: &[u8]) -> Option<u64> {
        self.attached.get(key).copied()
    }

    /// Whether a write may attach `key` to `lease` (checked before the write applies).
    pub fn check_attach(&self, lease: u64) -> Result<(), LeaseRefusal> {
        if self.leases.contains_key(&lease) {
            Ok(())
        } else {
            Err(LeaseRefusal::NotFound { lease })
        }
    }

    /// `key` now goes with `lease` (0: with none, as after a put without a lease).
    pub fn attach(&mut self, key: &[u8], lease: u64) {
        if let Some(old) = self.attached.remove(key)
            && let Some(record) = self.leases.get_mut(&old)
        {
            record.keys.remove(key);
        }
        if lease != 0
            && let Some(record) = self.leases.get_mut(&lease)
        {
            record.keys.insert(key.to_vec());
            self.attached.insert(key.to_vec(), lease);
        }
    }

    /// Whether a write to `key` carrying fencing `token` may apply: a token is good if no
    /// write to the key has carried a higher one (equal is the same holder again).
    pub fn check_fence(&self, key: &[u8], token: u64) -> Result<(), LeaseRefusal> {
        match self.fences.get(key) {
            Some(&fence) if token < fence => Err(LeaseRefusal::StaleToken {
                key: key.to_vec(),
                token,
                fence,
            }),
            _ => Ok(()),
        }
    }

    pub fn raise_fence(&mut self, key: &[u8], token: u64) {
        let fence = self.fences.entry(key.to_vec()).or_default();
        *fence = (*fence).max(token);
    }

    pub fn fence(&self, key: &[u8]) -> Option<u64> {
        self.fences.get(key).copied()
    }

    /// A key at or after `at` that a lease carries, if any: a split there would move it to
    /// the new range, away from its lease (whose id names this one), so it is refused.
    pub fn leased_from(&self, at: &[u8]) -> Option<(&[u8], u64)> {
        self.attached
            .range(at.to_vec()..)
            .next()
            .map(|(key, &lease)| (key.as_slice(), lease))
    }

    /// The fences of keys at or after `at`, moved out for the right half of a split.
    /// Leases stay: their ids name this range, and a split that would move a leased key
    /// is refused before it applies (see [`Self::leased_from`]).
    pub fn split_off(&mut self, at: &[u8]) -> LeaseTable {
        let fences = self.fences.split_off(at);
        LeaseTable {
            fences,
            ..LeaseTable::default()
        }
    }

    /// Takes in a merged range's state.
    pub fn absorb(&mut self, other: LeaseTable) {
        for (id, record) in other.leases {
            for key in &record.keys {
                self.attached.insert(key.clone(), id);
            }
            self.leases.insert(id, record);
        }
        for (key, token) in other.fences {
            self.raise_fence(&key, token);
        }
    }

    pub fn to_wire(&self) -> crate::proto::raft::LeaseState {
        crate::proto::raft::LeaseState {
            leases: self
                .leases
                .iter()
                .map(|(&id, record)| crate::proto::raft::LeaseEntry {
                    id,
                    ttl_ms: record.ttl_ms,
                    keys: record.keys.iter().cloned().collect(),
                })
                .collect(),
            fences: self
                .fences
                .iter()
                .map(|(key, &token)| crate::proto::raft::Fence {
                    key: key.clone(),
                    token,
                })
                .collect(),
        }
    }

    pub fn from_wire(wire: &crate::proto::raft::LeaseState) -> LeaseTable {
        let mut table = LeaseTable::default();
        for entry in &wire.leases {
            table.grant(entry.id, entry.ttl_ms);
            for key in &entry.keys {
                table.attach(key, entry.id);
            }
        }
        for fence in &wire.fences {
            table.raise_fence(&fence.key, fence.token);
        }
        table
    }
}

/// Seeded bugs of the lease timers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaseBugs {
    /// `lease-no-extension-on-election`: a new leader gives each lease only what the
    /// holder had left by the grant's count (TTL from when it learnt of the lease),
    /// without the election timeout, so a lease renewed at the old leader just before it
    /// fell can run out early.
    pub no_extension_on_election: bool,
}

/// The clock lease deadlines are counted on: true time since the driver started, scaled by
/// the injectable clock's rate, read at the moment it is asked. It never runs ahead of true
/// time (at rate 1), and it drops a stall: a gap between two reads longer than `stall`
/// (the process was paused, or starved) counts for nothing, so every lease outlasts the
/// stall in true time, as it would on a clock that stopped with the process.
///
/// The driver's tick count is not used: the driver drops the ticks it missed whenever a
/// loop iteration (an fsync) outlasts a tick, and under 1,800 grants/s that clock counted
/// 2.2 s of 5.5 s, stretching every TTL to 2.5 times its length.
#[derive(Clone, Debug)]
pub struct LeaseClock {
    /// Microseconds counted.
    us: u64,
    at: Option<Instant>,
    /// A backward clock step not yet paid back: time that counts for nothing.
    debt_us: u64,
    stall: Duration,
}

impl LeaseClock {
    pub fn new(stall: Duration) -> Self {
        LeaseClock {
            us: 0,
            at: None,
            debt_us: 0,
            stall,
        }
    }

    /// The clock at `now`, whole milliseconds rounded down.
    pub fn read(&mut self, now: Instant, rate: f64) -> u64 {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at);
            if elapsed <= self.stall {
                let elapsed_us = elapsed.as_micros() as u64;
                let add = if rate == 1.0 {
                    elapsed_us
                } else {
                    (elapsed_us as f64 * rate.max(0.0)) as u64
                };
                let paid = add.min(self.debt_us);
                self.debt_us -= paid;
                self.us += add - paid;
            }
        }
        if self.at.is_none_or(|at| now > at) {
            self.at = Some(now);
        }
        self.us / 1_000
    }

    /// A step of the node's clock: forward moves the clock on (a forward step that undoes
    /// a backward one only pays it back), by at most `forward_max_ms`; backward holds it
    /// back by the step, as it holds back the ticks.
    pub fn step(&mut self, delta_ms: i64, forward_max_ms: u64) {
        let step_us = delta_ms.unsigned_abs() * 1_000;
        if delta_ms < 0 {
            self.debt_us += step_us;
            return;
        }
        let paid = step_us.min(self.debt_us);
        self.debt_us -= paid;
        self.us += (step_us - paid).min(forward_max_ms * 1_000);
    }
}

/// How long after proposing an expiry the leader proposes it again if it has not applied
/// (the entry may have been lost with a leadership change).
pub const EXPIRY_RETRY_MS: u64 = 500;

/// A range leader's lease clocks. Nothing here is replicated: a follower has none, and a
/// new leader starts them from the table with [`LeaseTimers::promote`]. Ordered maps, so
/// that the model checker can hash a state (a range holds few leases at a time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaseTimers {
    /// lease -> when it runs out (ms of the leader's monotonic clock).
    deadlines: BTreeMap<u64, u64>,
    /// Expiries proposed and not yet applied: lease -> when proposed.
    expiring: BTreeMap<u64, u64>,
    /// lease -> when the grant applied here, for the seeded bug's count.
    granted_at: BTreeMap<u64, u64>,
    leading: bool,
    bugs: LeaseBugs,
}

impl LeaseTimers {
    pub fn new(bugs: LeaseBugs) -> Self {
        LeaseTimers {
            bugs,
            ..LeaseTimers::default()
        }
    }

    pub fn leading(&self) -> bool {
        self.leading
    }

    /// This replica became the leader at `now`: every lease the table holds gets its TTL
    /// afresh plus `extend_ms` (an election timeout), since the old leader may have renewed
    /// it just before it lost touch.
    pub fn promote(&mut self, table: &LeaseTable, now: u64, extend_ms: u64) {
        self.leading = true;
        self.expiring.clear();
        self.deadlines = table
            .ids()
            .map(|(id, record)| {
                let deadline = if self.bugs.no_extension_on_election {
                    let since = self.granted_at.get(&id).copied().unwrap_or(now);
                    since + record.ttl_ms
                } else {
                    now + record.ttl_ms + extend_ms
                };
                (id, deadline)
            })
            .collect();
    }

    /// No longer the leader: the clocks stop; the next leader starts its own.
    pub fn demote(&mut self) {
        self.leading = false;
        self.deadlines.clear();
        self.expiring.clear();
    }

    /// A grant applied at `now` (on every replica: a follower only notes when).
    pub fn granted(&mut self, id: u64, ttl_ms: u64, now: u64) {
        self.granted_at.entry(id).or_insert(now);
        if self.leading {
            self.deadlines.entry(id).or_insert(now + ttl_ms);
        }
    }

    /// A keep-alive at `now`: the lease runs out a TTL from now. False if this leader does
    /// not know the lease (or is not the leader).
    pub fn renew(&mut self, id: u64, ttl_ms: u64, now: u64) -> bool {
        if !self.leading {
            return false;
        }
        match self.deadlines.get_mut(&id) {
            // An expiry already proposed is not undone: the holder hears NOT_FOUND.
            Some(deadline) if !self.expiring.contains_key(&id) => {
                *deadline = now + ttl_ms;
                true
            }
            _ => false,
        }
    }

    /// What the lease has left at `now`, on the leader.
    pub fn remaining(&self, id: u64, now: u64) -> Option<u64> {
        self.deadlines.get(&id).map(|d| d.saturating_sub(now))
    }

    /// The leases run out by `now` whose expiry is to be proposed: each once, and again
    /// after [`EXPIRY_RETRY_MS`] if it has not applied.
    pub fn due(&mut self, now: u64) -> Vec<u64> {
        if !self.leading {
            return Vec::new();
        }
        let due: Vec<u64> = self
            .deadlines
            .iter()
            .filter(|&(id, &deadline)| {
                deadline <= now
                    && self
                        .expiring
                        .get(id)
                        .is_none_or(|&at| now >= at + EXPIRY_RETRY_MS)
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &due {
            self.expiring.insert(id, now);
        }
        due
    }

    /// The lease is gone from the table (expired or revoked).
    pub fn forget(&mut self, id: u64) {
        self.deadlines.remove(&id);
        self.expiring.remove(&id);
        self.granted_at.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(ids: &[(u64, u64)]) -> LeaseTable {
        let mut table = LeaseTable::default();
        for &(id, ttl) in ids {
            table.grant(id, ttl);
        }
        table
    }

    #[test]
    fn the_lease_clock_counts_true_time_drops_a_stall_and_follows_steps() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut clock = LeaseClock::new(Duration::from_millis(50));
        assert_eq!(clock.read(at(0), 1.0), 0);
        // Read every 30 ms (iterations longer than a tick): all of it counts.
        for i in 1..=10 {
            assert_eq!(clock.read(at(30 * i), 1.0), 30 * i);
        }
        // A 600 ms pause counts for nothing.
        assert_eq!(clock.read(at(900), 1.0), 300);
        assert_eq!(clock.read(at(910), 1.0), 310);
        // A fast clock counts faster.
        assert_eq!(clock.read(at(920), 2.0), 330);
        // Back 100 ms: the next 100 ms count for nothing; a forward step pays back first.
        clock.step(-100, 10_000);
        assert_eq!(clock.read(at(960), 1.0), 330);
        clock.step(70, 10_000);
        assert_eq!(clock.read(at(960), 1.0), 340);
        assert_eq!(clock.read(at(1000), 1.0), 380);
        // Forward, bounded.
        clock.step(5_000, 1_000);
        assert_eq!(clock.read(at(1000), 1.0), 1380);
        // An earlier instant than the last read changes nothing.
        assert_eq!(clock.read(at(990), 1.0), 1380);
    }

    #[test]
    fn a_lease_id_names_its_range() {
        let id = lease_id(7, 12345);
        assert_eq!(lease_group(id), 7);
        assert_ne!(lease_id(7, 1), lease_id(8, 1));
    }

    #[test]
    fn revoking_returns_the_keys_and_detaches_them() {
        let mut table = table_with(&[(1, 1000), (2, 1000)]);
        table.attach(b"a", 1);
        table.attach(b"b", 1);
        table.attach(b"c", 2);
        // A put of `b` with another lease moves it.
        table.attach(b"b", 2);
        let keys = table.revoke(1).unwrap();
        assert_eq!(keys, BTreeSet::from([b"a".to_vec()]));
        assert_eq!(table.lease_of(b"a"), None);
        assert_eq!(table.lease_of(b"b"), Some(2));
        assert!(table.revoke(1).is_none());
        assert_eq!(
            table.check_attach(1),
            Err(LeaseRefusal::NotFound { lease: 1 })
        );
    }

    #[test]
    fn a_put_without_a_lease_detaches_the_key() {
        let mut table = table_with(&[(1, 1000)]);
        table.attach(b"a", 1);
        table.attach(b"a", 0);
        assert_eq!(table.revoke(1).unwrap(), BTreeSet::new());
    }

    #[test]
    fn fences_refuse_only_lower_tokens() {
        let mut table = LeaseTable::default();
        assert!(table.check_fence(b"r", 5).is_ok());
        table.raise_fence(b"r", 5);
        assert!(table.check_fence(b"r", 5).is_ok());
        assert!(table.check_fence(b"r", 9).is_ok());
        assert!(matches!(
            table.check_fence(b"r", 4),
            Err(LeaseRefusal::StaleToken { fence: 5, .. })
        ));
        table.raise_fence(b"r", 3);
        assert_eq!(table.fence(b"r"), Some(5));
    }

    #[test]
    fn a_split_that_would_move_a_leased_key_is_detected() {
        let mut table = table_with(&[(1, 1000)]);
        table.attach(b"b", 1);
        table.attach(b"m", 1);
        assert_eq!(table.leased_from(b"c"), Some((b"m".as_slice(), 1)));
        assert_eq!(table.leased_from(b"a"), Some((b"b".as_slice(), 1)));
        assert_eq!(table.leased_from(b"n"), None);
    }

    #[test]
    fn the_wire_form_round_trips() {
        let mut table = table_with(&[(1, 1000), (2, 3000)]);
        table.attach(b"a", 1);
        table.attach(b"z", 2);
        table.raise_fence(b"r", 17);
        assert_eq!(LeaseTable::from_wire(&table.to_wire()), table);
    }

    #[test]
    fn a_leader_expires_a_lease_a_ttl_after_its_last_keepalive() {
        let table = table_with(&[]);
        let mut timers = LeaseTimers::default();
        timers.promote(&table, 0, 300);
        timers.granted(1, 1000, 100);
        assert!(timers.due(1099).is_empty());
        assert!(timers.renew(1, 1000, 900));
        assert!(timers.due(1899).is_empty());
        assert_eq!(timers.due(1900), vec![1]);
        // Proposed once; again only after the retry interval.
        assert!(timers.due(1950).is_empty());
        assert_eq!(timers.due(1900 + EXPIRY_RETRY_MS), vec![1]);
        // An expiry on its way is not undone by a late keep-alive.
        assert!(!timers.renew(1, 1000, 2500));
        timers.forget(1);
        assert!(timers.due(10_000).is_empty());
    }

    #[test]
    fn a_new_leader_gives_every_lease_its_ttl_and_an_election_timeout() {
        let table = table_with(&[(1, 1000)]);
        let mut timers = LeaseTimers::default();
        timers.granted(1, 1000, 0);
        // Promoted long after the grant: the old leader may have renewed it just now.
        timers.promote(&table, 5000, 300);
        assert!(timers.due(6299).is_empty());
        assert_eq!(timers.due(6300), vec![1]);
    }

    #[test]
    fn the_seeded_bug_expires_a_renewed_lease_early_after_an_election() {
        let table = table_with(&[(1, 1000)]);
        let mut timers = LeaseTimers::new(LeaseBugs {
            no_extension_on_election: true,
        });
        timers.granted(1, 1000, 0);
        timers.promote(&table, 5000, 300);
        assert_eq!(timers.due(5000), vec![1]);
    }

    #[test]
    fn a_follower_proposes_nothing_and_renews_nothing() {
        let mut timers = LeaseTimers::default();
        timers.granted(1, 1000, 0);
        assert!(!timers.renew(1, 1000, 10));
        assert!(timers.due(1_000_000).is_empty());
        let table = table_with(&[(1, 1000)]);
        timers.promote(&table, 0, 0);
        timers.demote();
        assert!(timers.due(1_000_000).is_empty());
    }
}
