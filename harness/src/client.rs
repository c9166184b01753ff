//! Clients of the system under test, behind a small trait so that another system
//! (etcd speaks gRPC too) can be put under test with the same workloads and checkers.

use std::net::SocketAddr;
use std::time::Duration;

use faultline_node::client::{Effect, Routing, RoutingClient, effect};
use faultline_node::proto::kv::{
    CompareAndSwapRequest, ScanRequest, WriteId, compare_and_swap_request::Expected,
};
use faultline_workloads::{Isolation, MicroOp, MicroOpKind, SET_PREFIX, set_element_key};
use serde_json::Value;

use crate::history::{EventType, History, Process};

/// One operation on a register-like key: values are integers, nil is "absent".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Read {
        key: String,
    },
    Write {
        key: String,
        value: i64,
    },
    /// Compare-and-set from `expected` (None: absent) to `new`.
    Cas {
        key: String,
        expected: Option<i64>,
        new: i64,
    },
    /// Add `element` to the set: a put of the element's own key.
    Add {
        element: i64,
    },
    /// Read the whole set: a scan of the set's prefix, page by page.
    ReadAll,
    /// A transaction of micro-ops at an isolation level (one `Txn` request).
    Txn {
        ops: Vec<MicroOp>,
        isolation: Isolation,
    },
    /// The bank: read both balances, then one transaction that writes both new balances
    /// only if neither changed meanwhile (compares guard it).
    Transfer {
        from: u32,
        to: u32,
        amount: i64,
    },
    /// The bank: every balance, read in one transaction.
    Balances,
    /// The lock: grant a lease (kept alive in the background), then take lock `lock`.
    Acquire {
        lock: String,
    },
    /// The lock: write `value` to the register lock `lock` protects, with its token.
    FencedWrite {
        lock: String,
        value: i64,
    },
    /// The lock: stop the keep-alives and sleep `ms`, as a paused holder.
    Stall {
        ms: u64,
    },
    /// The lock: sleep `ms` holding it, keep-alives running.
    Hold {
        ms: u64,
    },
    /// The lock: unlock, and revoke the lease.
    Release {
        lock: String,
    },
    /// The watch: stay away `gap_ms`, then resume the watch for `segment_ms`.
    WatchSegment {
        gap_ms: u64,
        segment_ms: u64,
    },
    /// The watch, after healing: every change from revision 1, through the client's
    /// `node`th node (its own first).
    WatchAll {
        node: usize,
    },
    /// The membership workload: wait `poll_ms`, then read the client's node's gossip view.
    Members {
        poll_ms: u64,
    },
}

/// The key of the register lock `lock` protects.
pub fn register_key(lock: &str) -> Vec<u8> {
    format!("register/{lock}").into_bytes()
}

/// The first process number of keep-alive renewals in a history: far above any worker's,
/// so that the two never meet. Each keep-alive task takes its own, and a new one after an
/// unknown outcome, so that no process has two renewals in flight.
pub const RENEWAL_PROCESS_BASE: u64 = 1 << 32;

fn next_renewal_process() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    RENEWAL_PROCESS_BASE + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A lock this client holds, or believes it holds.
struct Held {
    name: String,
    lease: u64,
    token: u64,
    /// Renews the lease every third of its TTL until stopped (dropped or aborted).
    keep_alive: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
    }
}

/// A bank transaction (serializable) of `ops`.
fn bank_txn(
    ops: impl IntoIterator<Item = faultline_node::proto::kv::micro_op::Op>,
    write_id: Option<WriteId>,
) -> faultline_node::proto::kv::TxnRequest {
    use faultline_node::proto::kv as wire;
    wire::TxnRequest {
        ops: ops
            .into_iter()
            .map(|op| wire::MicroOp { op: Some(op) })
            .collect(),
        isolation: wire::Isolation::Serializable as i32,
        write_id,
    }
}

/// The key holding account `account`'s balance.
pub fn account_key(account: u32) -> Vec<u8> {
    faultline_workloads::key_name(account).into_bytes()
}

/// Elements one scan page asks for (the node's default scan_limit_max).
const SET_PAGE: u32 = 10_000;

/// How an operation ended, in Jepsen's terms.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// It happened; `value` is what a read returned.
    Ok { value: Value },
    /// It happened and failed by its own semantics: a cas whose compare did not match;
    /// `seen` is the value the node compared against (nil: absent).
    Fail { error: String, seen: Value },
    /// It definitely did not happen: the node refused it, or it never reached a node.
    Refused { error: String },
    /// Unknown: it may have happened, now or later.
    Info { error: String },
}

#[tonic::async_trait]
pub trait Client: Send {
    async fn invoke(&mut self, operation: &Operation) -> Completion;
    /// Sends the last write or cas again as the same write (same idempotency key), after
    /// its outcome was unknown: the system must not apply it twice.
    async fn resend(&mut self, operation: &Operation) -> Completion;
    /// Talks to another node from now on, as the same client (for resends). Clients that
    /// pick their node per request ignore it.
    fn retarget(&mut self, _addr: SocketAddr, _source: Option<std::net::IpAddr>) {}
    /// The node (index) that answered the last operation, if the client chose it itself.
    fn answered_by(&self) -> Option<usize> {
        None
    }
}

/// A Faultline cluster's `Kv` API, through the routing client: straight to each
/// partition's leader ([`Routing::Direct`]), or through the client's own node, which
/// coordinates ([`Routing::Node`]). Writes carry a `WriteId` (client id, sequence) so that
/// a resent write is recognised by the store and applied once.
pub struct FaultlineClient {
    router: std::sync::Arc<RoutingClient>,
    routing: Routing,
    /// Every node, the client's own first: where a direct client learns the map.
    seeds: Vec<SocketAddr>,
    source: Option<std::net::IpAddr>,
    client_id: String,
    sequence: u64,
    timeout: Duration,
    /// The bank's accounts, and whether a balance may go negative.
    pub bank_accounts: u32,
    pub bank_negative: bool,
    /// The last transfer's guarded write, resent as it was: a resend that read the
    /// balances again would see its own earlier attempt's effect and misreport it.
    last_transfer: Option<faultline_node::proto::kv::TxnRequest>,
    /// The lock workload's lease TTL, and the lock held.
    pub lock_ttl_ms: u64,
    held: Option<Held>,
    /// Where the keep-alives record their renewals (the lock workload's history).
    pub renewals: Option<std::sync::Arc<History>>,
    /// The watch workload: where this watcher's stream has got to, and the node it
    /// watches through (the next one after a failure).
    watch_cursor: faultline_node::client::watch::WatchCursor,
    watch_node: usize,
    /// Reads ask for the leader's lease (`read_mode: lease`).
    pub lease_reads: bool,
}

impl FaultlineClient {
    /// A client of node `addr` (sending from `source`), among `nodes`.
    pub fn new(
        addr: SocketAddr,
        nodes: &[SocketAddr],
        routing: Routing,
        source: Option<std::net::IpAddr>,
        client_id: String,
        timeout: Duration,
    ) -> Self {
        let mut seeds = vec![addr];
        seeds.extend(nodes.iter().filter(|n| **n != addr));
        Self {
            router: std::sync::Arc::new(RoutingClient::new(
                seeds.clone(),
                routing,
                source,
                timeout,
            )),
            routing,
            seeds,
            source,
            client_id,
            sequence: 0,
            timeout,
            bank_accounts: 0,
            bank_negative: false,
            last_transfer: None,
            lock_ttl_ms: 1_000,
            held: None,
            renewals: None,
            watch_cursor: crate::watch_client::everything(),
            watch_node: 0,
            lease_reads: false,
        }
    }

    fn write_id(&self) -> Option<WriteId> {
        Some(WriteId {
            client_id: self.client_id.clone(),
            sequence: self.sequence,
        })
    }
}

/// A value as the history records it: an integer if it reads as one, else the text.
pub(crate) fn decode(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(n) => Value::from(n),
        None => Value::from(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// A write's failure: refused (not applied) or unknown, as the routing client's rules say.
fn write_error(status: &tonic::Status) -> Completion {
    let error = format!("{:?}: {}", status.code(), status.message());
    match effect(status) {
        Effect::NotApplied => Completion::Refused { error },
        Effect::Unknown => Completion::Info { error },
    }
}

#[tonic::async_trait]
impl Client for FaultlineClient {
    async fn invoke(&mut self, operation: &Operation) -> Completion {
        if !matches!(operation, Operation::Read { .. } | Operation::ReadAll) {
            self.sequence += 1;
        }
        self.send(operation).await
    }

    async fn resend(&mut self, operation: &Operation) -> Completion {
        if let (Operation::Transfer { .. }, Some(message)) = (operation, self.last_transfer.clone())
        {
            return self.send_transfer(message).await;
        }
        self.send(operation).await
    }

    /// A resend after a fault usually has to go elsewhere, and must still carry the same
    /// write id. A direct client picks its node per request, so only its source changes.
    fn retarget(&mut self, addr: SocketAddr, source: Option<std::net::IpAddr>) {
        if self.routing == Routing::Direct && source == self.source {
            return;
        }
        let mut seeds = vec![addr];
        seeds.extend(self.seeds.iter().filter(|n| **n != addr));
        self.router = std::sync::Arc::new(RoutingClient::new(
            seeds,
            self.routing,
            source,
            self.timeout,
        ));
        self.source = source;
    }
}

impl FaultlineClient {
    async fn send(&mut self, operation: &Operation) -> Completion {
        match operation {
            Operation::Read { key } => {
                let message = faultline_node::proto::kv::GetRequest {
                    key: key.as_bytes().to_vec(),
                    serializable: false,
                    lease_read: self.lease_reads,
                };
                let got = self.router.get_request(message, self.timeout).await;
                match got {
                    Ok(reply) => {
                        let value = if reply.found {
                            decode(&reply.value)
                        } else {
                            Value::Null
                        };
                        Completion::Ok { value }
                    }
                    // A read has no effect: whatever went wrong, it did not happen.
                    Err(status) => Completion::Refused {
                        error: format!("{:?}: {}", status.code(), status.message()),
                    },
                }
            }
            Operation::Write { key, value } => {
                let write_id = self.write_id();
                let put = self.router.put(
                    key.as_bytes().to_vec(),
                    value.to_string().into_bytes(),
                    write_id,
                    self.timeout,
                );
                match put.await {
                    Ok(_) => Completion::Ok {
                        value: Value::from(*value),
                    },
                    Err(status) => write_error(&status),
                }
            }
            Operation::Cas { key, expected, new } => {
                let write_id = self.write_id();
                let expected = match expected {
                    Some(value) => Expected::ExpectedValue(value.to_string().into_bytes()),
                    None => Expected::ExpectedAbsent(true),
                };
                let message = CompareAndSwapRequest {
                    key: key.as_bytes().to_vec(),
                    expected: Some(expected),
                    new_value: new.to_string().into_bytes(),
                    write_id,
                };
                match self.router.compare_and_swap(message, self.timeout).await {
                    Ok(reply) if reply.succeeded => Completion::Ok { value: Value::Null },
                    Ok(reply) => {
                        let current = if reply.found {
                            decode(&reply.current_value)
                        } else {
                            Value::Null
                        };
                        Completion::Fail {
                            error: format!("compare did not match: current value {current}"),
                            seen: current,
                        }
                    }
                    Err(status) => write_error(&status),
                }
            }
            Operation::Add { element } => {
                let write_id = self.write_id();
                let put = self.router.put(
                    set_element_key(*element as u64).into_bytes(),
                    element.to_string().into_bytes(),
                    write_id,
                    self.timeout,
                );
                match put.await {
                    Ok(_) => Completion::Ok {
                        value: Value::from(*element),
                    },
                    Err(status) => write_error(&status),
                }
            }
            Operation::ReadAll => self.read_set().await,
            Operation::Txn { ops, isolation } => self.transact(ops, *isolation).await,
            Operation::Transfer { from, to, amount } => self.transfer(*from, *to, *amount).await,
            Operation::Balances => self.balances().await,
            Operation::Acquire { lock } => self.acquire(lock).await,
            Operation::FencedWrite { lock, value } => self.fenced_write(lock, *value).await,
            Operation::Stall { ms } => {
                // A paused process renews nothing: its lease runs out while it sleeps.
                if let Some(task) = self.held.as_mut().and_then(|h| h.keep_alive.take()) {
                    task.abort();
                }
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Completion::Ok {
                    value: Value::from(*ms),
                }
            }
            Operation::Hold { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Completion::Ok {
                    value: Value::from(*ms),
                }
            }
            Operation::Release { lock } => self.release(lock).await,
            Operation::WatchSegment { gap_ms, segment_ms } => {
                self.watch_segment(*gap_ms, *segment_ms).await
            }
            Operation::Members { poll_ms } => {
                tokio::time::sleep(Duration::from_millis(*poll_ms)).await;
                match crate::membership_client::members(self.seeds[0], self.source).await {
                    Ok(value) => Completion::Ok { value },
                    Err(error) => Completion::Refused { error },
                }
            }
            Operation::WatchAll { node } => {
                let addr = self.seeds[node % self.seeds.len()];
                match crate::watch_client::watch_all(addr, self.source).await {
                    Ok(value) => Completion::Ok { value },
                    Err(error) => Completion::Refused { error },
                }
            }
        }
    }

    /// A segment always completes `ok` with what it was sent: a stream cut off is part
    /// of what is checked (the next segment resumes it, through the next node).
    async fn watch_segment(&mut self, gap_ms: u64, segment_ms: u64) -> Completion {
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        let addr = self.seeds[self.watch_node % self.seeds.len()];
        let mut segment = crate::watch_client::Segment::default();
        let until = tokio::time::Instant::now() + Duration::from_millis(segment_ms);
        crate::watch_client::watch_for(
            addr,
            self.source,
            &mut self.watch_cursor,
            until,
            &mut segment,
            |_| false,
        )
        .await;
        if segment.ended.is_some() {
            self.watch_node += 1;
        }
        Completion::Ok {
            value: segment.value(),
        }
    }

    async fn acquire(&mut self, lock: &str) -> Completion {
        // A lock left from a section that did not finish is given up first.
        self.held = None;
        let router = self.router.clone();
        let key = faultline_node::server::lock_key(lock);
        let lease = match router
            .lease_grant(self.lock_ttl_ms, key, self.timeout)
            .await
        {
            Ok(reply) => reply.id,
            Err(status) => {
                // A grant whose outcome is unknown leaves at most a lease nobody renews.
                return Completion::Refused {
                    error: format!("lease grant: {:?}: {}", status.code(), status.message()),
                };
            }
        };
        let every = Duration::from_millis(self.lock_ttl_ms / 3);
        let timeout = self.timeout;
        let renewer = router.clone();
        let renewals = self.renewals.clone();
        let name = lock.to_string();
        let keep_alive = tokio::spawn(async move {
            let mut process = next_renewal_process();
            loop {
                tokio::time::sleep(every).await;
                let invoked = renewals.as_ref().map(|h| {
                    h.record(
                        EventType::Invoke,
                        Process::Client(process),
                        "renew",
                        Some(&name),
                        Value::from(lease),
                        None,
                        None,
                        0,
                    )
                });
                let answer = renewer.lease_renew(lease, timeout.min(every)).await;
                let gone = matches!(&answer, Err(s) if s.code() == tonic::Code::NotFound);
                if let (Some(history), Some(_)) = (&renewals, invoked) {
                    let (kind, value, error) = match &answer {
                        Ok(reply) => (EventType::Ok, Value::from(reply.ttl_ms), None),
                        Err(status) => (
                            if gone {
                                EventType::Fail
                            } else {
                                EventType::Info
                            },
                            Value::Null,
                            Some(format!("{:?}: {}", status.code(), status.message())),
                        ),
                    };
                    history.record(
                        kind,
                        Process::Client(process),
                        "renew",
                        Some(&name),
                        value,
                        error,
                        None,
                        0,
                    );
                    // An unknown outcome retires the process (Jepsen's rule).
                    if kind == EventType::Info {
                        process = next_renewal_process();
                    }
                }
                if gone {
                    return;
                }
            }
        });
        let mut held = Held {
            name: lock.to_string(),
            lease,
            token: 0,
            keep_alive: Some(keep_alive),
        };
        match router.lock(lock, lease, self.timeout).await {
            Ok(reply) => {
                held.token = reply.token;
                self.held = Some(held);
                // The lease goes with the token: the checker ties the keep-alives'
                // renewals to this section by it.
                Completion::Ok {
                    value: Value::from(vec![Value::from(reply.token), Value::from(lease)]),
                }
            }
            Err(status) => {
                // Not taken, or perhaps taken: either way the lease is left to run out
                // (the keep-alives stop with `held`), which frees the lock.
                drop(held);
                write_error(&status)
            }
        }
    }

    async fn fenced_write(&mut self, lock: &str, value: i64) -> Completion {
        let Some(held) = self.held.as_ref().filter(|h| h.name == lock) else {
            return Completion::Refused {
                error: "not sent: this client holds no lock".into(),
            };
        };
        let token = held.token;
        let message = faultline_node::proto::kv::PutRequest {
            key: register_key(lock),
            value: value.to_string().into_bytes(),
            fencing_token: token,
            ..Default::default()
        };
        match self.router.put_request(message, self.timeout).await {
            Ok(_) => Completion::Ok {
                value: Value::from(vec![Value::from(value), Value::from(token)]),
            },
            Err(status) => write_error(&status),
        }
    }

    async fn release(&mut self, lock: &str) -> Completion {
        let Some(mut held) = self.held.take().filter(|h| h.name == lock) else {
            return Completion::Refused {
                error: "not sent: this client holds no lock".into(),
            };
        };
        // Renewals stop first: one answered NOT_FOUND after the revoke would read as the
        // lease running out early.
        if let Some(task) = held.keep_alive.take() {
            task.abort();
        }
        let released = self
            .router
            .unlock(lock, held.lease, self.timeout)
            .await
            .map(|r| r.released);
        let _ = self.router.lease_revoke(held.lease, self.timeout).await;
        match released {
            // 1 if the lease still held the lock, 0 if it had run out meanwhile.
            Ok(released) => Completion::Ok {
                value: Value::from(i64::from(released)),
            },
            Err(status) => write_error(&status),
        }
    }

    /// Sets up the bank: `total` spread evenly over `accounts` (the remainder in account
    /// 0), in one transaction that only applies if no account exists yet.
    pub async fn open_bank(&mut self, accounts: u32, total: i64) -> Result<(), String> {
        use faultline_node::proto::kv::{self as wire, micro_op, txn_compare};
        let share = total / i64::from(accounts);
        let mut ops = Vec::new();
        for a in 0..accounts {
            ops.push(micro_op::Op::Compare(wire::TxnCompare {
                key: account_key(a),
                expected: Some(txn_compare::Expected::Absent(true)),
            }));
        }
        for a in 0..accounts {
            let balance = share
                + if a == 0 {
                    total - share * i64::from(accounts)
                } else {
                    0
                };
            ops.push(micro_op::Op::Write(wire::TxnWrite {
                key: account_key(a),
                value: balance.to_string().into_bytes(),
            }));
        }
        self.sequence += 1;
        let message = bank_txn(ops, self.write_id());
        match self.router.txn(message, self.timeout).await {
            // A failed compare: an earlier attempt opened it.
            Ok(_) => Ok(()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// Reads `accounts` in one transaction with no write id: a read changes nothing.
    async fn read_accounts(&self, accounts: &[u32]) -> Result<Vec<Option<i64>>, tonic::Status> {
        use faultline_node::proto::kv::{self as wire, micro_op};
        let reads = accounts.iter().map(|a| {
            micro_op::Op::Read(wire::TxnRead {
                key: account_key(*a),
            })
        });
        let message = bank_txn(reads, None);
        let reply = self.router.txn(message, self.timeout).await?;
        Ok(reply
            .results
            .iter()
            .map(|r| {
                r.found
                    .then(|| std::str::from_utf8(&r.value).ok()?.parse::<i64>().ok())
                    .flatten()
            })
            .collect())
    }

    async fn balances(&mut self) -> Completion {
        // Every account the run opened: the bank's own key names, k0 .. k{n-1}.
        let accounts: Vec<u32> = (0..self.bank_accounts).collect();
        match self.read_accounts(&accounts).await {
            Ok(balances) => Completion::Ok {
                value: Value::Array(
                    accounts
                        .iter()
                        .zip(balances)
                        .map(|(a, b)| {
                            Value::Array(vec![Value::from(*a), b.map_or(Value::Null, Value::from)])
                        })
                        .collect(),
                ),
            },
            Err(status) => Completion::Refused {
                error: format!("{:?}: {}", status.code(), status.message()),
            },
        }
    }

    async fn transfer(&mut self, from: u32, to: u32, amount: i64) -> Completion {
        use faultline_node::proto::kv::{self as wire, micro_op, txn_compare};
        self.last_transfer = None;
        let (b_from, b_to) = match self.read_accounts(&[from, to]).await.as_deref() {
            Ok([Some(a), Some(b)]) => (*a, *b),
            Ok(_) => {
                return Completion::Refused {
                    error: "an account has no balance (the bank was not opened)".into(),
                };
            }
            Err(status) => {
                return Completion::Refused {
                    error: format!("{:?}: {}", status.code(), status.message()),
                };
            }
        };
        if b_from < amount && !self.bank_negative {
            return Completion::Fail {
                error: format!("insufficient funds: account {from} holds {b_from}"),
                seen: Value::Null,
            };
        }
        let compare = |account: u32, balance: i64| {
            micro_op::Op::Compare(wire::TxnCompare {
                key: account_key(account),
                expected: Some(txn_compare::Expected::Value(
                    balance.to_string().into_bytes(),
                )),
            })
        };
        let write = |account: u32, balance: i64| {
            micro_op::Op::Write(wire::TxnWrite {
                key: account_key(account),
                value: balance.to_string().into_bytes(),
            })
        };
        let ops = [
            compare(from, b_from),
            compare(to, b_to),
            write(from, b_from - amount),
            write(to, b_to + amount),
        ];
        let message = bank_txn(ops, self.write_id());
        self.last_transfer = Some(message.clone());
        self.send_transfer(message).await
    }

    /// Sends a transfer's guarded write (again, on a resend: same write id, same guards).
    async fn send_transfer(
        &mut self,
        message: faultline_node::proto::kv::TxnRequest,
    ) -> Completion {
        match self.router.txn(message, self.timeout).await {
            Ok(reply) if reply.committed => Completion::Ok { value: Value::Null },
            Ok(_) => Completion::Fail {
                error: "a balance changed since it was read; nothing was transferred".into(),
                seen: Value::Null,
            },
            Err(status) => write_error(&status),
        }
    }

    /// One `Txn` request; the completed micro-ops (reads filled in) in Elle's form.
    async fn transact(&mut self, ops: &[MicroOp], isolation: Isolation) -> Completion {
        use faultline_node::proto::kv::{self as wire, micro_op};
        let wire_ops = ops
            .iter()
            .map(|op| {
                let key = op.key.as_bytes().to_vec();
                let value = op.value.unwrap_or_default().to_string().into_bytes();
                let op = match op.f {
                    MicroOpKind::Read => micro_op::Op::Read(wire::TxnRead { key }),
                    MicroOpKind::Append => micro_op::Op::Append(wire::TxnAppend {
                        key,
                        element: value,
                    }),
                    MicroOpKind::Write => micro_op::Op::Write(wire::TxnWrite { key, value }),
                };
                wire::MicroOp { op: Some(op) }
            })
            .collect();
        let message = wire::TxnRequest {
            ops: wire_ops,
            isolation: match isolation {
                Isolation::Serializable => wire::Isolation::Serializable,
                Isolation::Snapshot => wire::Isolation::Snapshot,
                Isolation::ReadCommitted => wire::Isolation::ReadCommitted,
            } as i32,
            write_id: self.write_id(),
        };
        let reply = match self.router.txn(message, self.timeout).await {
            Ok(reply) => reply,
            Err(status) => return write_error(&status),
        };
        if reply.results.len() != ops.len() {
            // Not what the node promises: an answer that cannot be recorded faithfully is
            // recorded as unknown, not guessed at.
            return Completion::Info {
                error: format!(
                    "the node answered {} results for {} micro-ops",
                    reply.results.len(),
                    ops.len()
                ),
            };
        }
        let completed = ops
            .iter()
            .zip(&reply.results)
            .map(|(op, result)| {
                let value = match op.f {
                    MicroOpKind::Read if !result.found => Value::Null,
                    MicroOpKind::Read if result.is_list => {
                        Value::Array(result.elements.iter().map(|e| decode(e)).collect())
                    }
                    // A register read; a list-append read of a plain value shows it as is.
                    MicroOpKind::Read => decode(&result.value),
                    _ => op.value.map_or(Value::Null, Value::from),
                };
                Value::Array(vec![
                    Value::from(op.f.as_str()),
                    Value::from(op.key.clone()),
                    value,
                ])
            })
            .collect();
        Completion::Ok {
            value: Value::Array(completed),
        }
    }

    /// Scans the set's prefix page by page; the elements, in order.
    async fn read_set(&mut self) -> Completion {
        let end = {
            let mut end = SET_PREFIX.as_bytes().to_vec();
            *end.last_mut().expect("a non-empty prefix") += 1;
            end
        };
        let mut start = SET_PREFIX.as_bytes().to_vec();
        let mut elements = Vec::new();
        loop {
            let request = ScanRequest {
                start: start.clone(),
                end: end.clone(),
                limit: SET_PAGE,
                serializable: false,
            };
            match self.router.scan(request, self.timeout).await {
                Ok(reply) => {
                    for item in &reply.items {
                        elements.push(decode(&item.value));
                    }
                    match (reply.more, reply.items.last()) {
                        (true, Some(last)) if last.key >= start => {
                            start = last.key.clone();
                            start.push(0);
                        }
                        (true, _) => {
                            // A page that says "more" but does not move forward would loop
                            // for ever: the scan is broken, and says so.
                            return Completion::Refused {
                                error: "the scan said more keys follow but made no progress".into(),
                            };
                        }
                        _ => {
                            return Completion::Ok {
                                value: Value::Array(elements),
                            };
                        }
                    }
                }
                Err(status) => {
                    return Completion::Refused {
                        error: format!("{:?}: {}", status.code(), status.message()),
                    };
                }
            }
        }
    }
}
