//! Generated transaction histories: a simulated store that runs each transaction atomically
//! at its completion, so the history is strict-serializable by construction (unless a seeded
//! bug says otherwise). For benchmarks (a million transactions) and property tests.
//!
//! Like Elle's generator: a pool of active keys chosen with an exponential bias (key `i` of the
//! pool half as likely as key `i-1`), each retired for a fresh one after a bounded number of
//! writes, so reads stay short; transactions of 1..=`max_txn_len` micro-ops. Client threads
//! interleave at random; a fraction of transactions end `info` (half of them took effect).
//! Output is written straight to JSON Lines, so a million transactions need no events in
//! memory.

use std::io::Write;

use super::Workload;
use crate::generate::Rng;

/// A bug the simulated store can have, to make invalid histories of a known kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TxnBug {
    /// With this probability a read returns the key as it was before its latest write
    /// (a stale snapshot): the history is no longer serializable.
    StaleRead(f64),
}

/// Parameters of a generated history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TxnWorkload {
    /// list-append or rw-register.
    pub workload: Workload,
    /// Transactions to generate.
    pub txns: usize,
    /// Concurrent client threads.
    pub processes: u64,
    /// Keys in use at any time.
    pub active_keys: u64,
    /// Writes a key takes before it is retired.
    pub max_writes_per_key: u64,
    /// Micro-ops per transaction, at most.
    pub max_txn_len: u64,
    /// Fraction of transactions that end `info`.
    pub info_fraction: f64,
    /// A seeded bug, if any.
    pub bug: Option<TxnBug>,
    /// Seed of every choice.
    pub seed: u64,
}

impl Default for TxnWorkload {
    fn default() -> Self {
        TxnWorkload {
            workload: Workload::ListAppend,
            txns: 1000,
            processes: 10,
            active_keys: 10,
            max_writes_per_key: 32,
            max_txn_len: 4,
            info_fraction: 0.01,
            bug: None,
            seed: 1,
        }
    }
}

#[derive(Clone)]
struct PlannedMop {
    read: bool,
    key: u64,
    value: u64,
}

struct InFlight {
    process: u64,
    mops: Vec<PlannedMop>,
}

fn write_value(
    out: &mut Vec<u8>,
    workload: Workload,
    mops: &[PlannedMop],
    results: Option<&[Option<Vec<u64>>]>,
) {
    out.push(b'[');
    for (i, m) in mops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let f = match (m.read, workload) {
            (true, _) => "r",
            (false, Workload::ListAppend) => "append",
            (false, Workload::RwRegister) => "w",
        };
        let _ = write!(out, "[\"{f}\",{},", m.key);
        if !m.read {
            let _ = write!(out, "{}", m.value);
        } else {
            match results.and_then(|r| r[i].as_ref()) {
                None => out.extend_from_slice(b"null"),
                Some(v) if workload == Workload::RwRegister => match v.last() {
                    Some(x) => {
                        let _ = write!(out, "{x}");
                    }
                    None => out.extend_from_slice(b"null"),
                },
                Some(v) => {
                    out.push(b'[');
                    for (j, x) in v.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        let _ = write!(out, "{x}");
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b']');
    }
    out.push(b']');
}

impl TxnWorkload {
    /// Writes the history as JSON Lines; returns the number of events written.
    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<usize> {
        let mut rng = Rng(self.seed ^ 0x5eed_7a11_0000_0001);
        // Each key's list (for registers, its last element is the value).
        let mut state: Vec<Vec<u64>> = Vec::new();
        let mut writes: Vec<u64> = Vec::new();
        let mut pool: Vec<u64> = Vec::new();
        for _ in 0..self.active_keys.max(1) {
            pool.push(state.len() as u64);
            state.push(Vec::new());
            writes.push(0);
        }
        let threads = self.processes.max(1) as usize;
        let mut slots: Vec<Option<InFlight>> = (0..threads).map(|_| None).collect();
        let mut process_of: Vec<u64> = (0..threads as u64).collect();
        let mut started = 0usize;
        let mut done = 0usize;
        let mut index = 0usize;
        let mut line: Vec<u8> = Vec::with_capacity(256);
        while done < self.txns {
            let t = rng.below(threads as u64) as usize;
            line.clear();
            let time = index as u64 * 1000;
            match slots[t].take() {
                None if started < self.txns => {
                    let len = rng.between(1, self.max_txn_len.max(1));
                    let mut mops = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        let i = (rng.next().trailing_zeros() as usize).min(pool.len() - 1);
                        let read = rng.chance(0.5);
                        let mut key = pool[i];
                        let mut value = 0;
                        if !read {
                            if writes[key as usize] >= self.max_writes_per_key {
                                // Retire the key for a fresh one.
                                let fresh = state.len() as u64;
                                state.push(Vec::new());
                                writes.push(0);
                                pool[i] = fresh;
                                key = fresh;
                            }
                            writes[key as usize] += 1;
                            value = writes[key as usize];
                        }
                        mops.push(PlannedMop { read, key, value });
                    }
                    let process = process_of[t];
                    let _ = write!(
                        line,
                        "{{\"index\":{index},\"type\":\"invoke\",\"process\":{process},\"time\":{time},\"f\":\"txn\",\"value\":"
                    );
                    write_value(&mut line, self.workload, &mops, None);
                    line.extend_from_slice(b"}\n");
                    slots[t] = Some(InFlight { process, mops });
                    started += 1;
                }
                None => continue,
                Some(txn) => {
                    let info = rng.chance(self.info_fraction);
                    let applies = !info || rng.chance(0.5);
                    let mut results: Vec<Option<Vec<u64>>> = Vec::with_capacity(txn.mops.len());
                    let mut local: Vec<(u64, Vec<u64>)> = Vec::new();
                    for m in &txn.mops {
                        let current = local
                            .iter()
                            .find(|(k, _)| *k == m.key)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_else(|| state[m.key as usize].clone());
                        if m.read {
                            let mut seen = current;
                            if let Some(TxnBug::StaleRead(p)) = self.bug
                                && !seen.is_empty()
                                && rng.chance(p)
                            {
                                seen.pop();
                            }
                            results.push(Some(seen));
                        } else {
                            let mut next = current;
                            next.push(m.value);
                            match local.iter_mut().find(|(k, _)| *k == m.key) {
                                Some(slot) => slot.1 = next,
                                None => local.push((m.key, next)),
                            }
                            results.push(None);
                        }
                    }
                    if applies {
                        for (k, v) in local {
                            state[k as usize] = v;
                        }
                    }
                    let kind = if info { "info" } else { "ok" };
                    let _ = write!(
                        line,
                        "{{\"index\":{index},\"type\":\"{kind}\",\"process\":{},\"time\":{time},\"f\":\"txn\",\"value\":",
                        txn.process
                    );
                    if info {
                        write_value(&mut line, self.workload, &txn.mops, None);
                        // The thread goes on as a new process: the old one may still be running.
                        process_of[t] += threads as u64;
                    } else {
                        write_value(&mut line, self.workload, &txn.mops, Some(&results));
                    }
                    line.extend_from_slice(b"}\n");
                    done += 1;
                }
            }
            out.write_all(&line)?;
            index += 1;
        }
        Ok(index)
    }

    /// The history as JSON Lines text.
    pub fn jsonl(&self) -> String {
        let mut out = Vec::new();
        self.write_jsonl(&mut out).expect("writing to memory");
        String::from_utf8(out).expect("the generator writes UTF-8")
    }
}
