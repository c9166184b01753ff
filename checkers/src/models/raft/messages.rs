//! What travels between the model's actors: the core's own peer messages, and the
//! requests and replies of the register clients.

use std::cmp::Ordering;
use std::fmt;

use faultline_node::proto::raft::{
    Command, Entry, EntryKind, Message, command::Op, compare_and_swap::Expected, message::Body,
};
use faultline_node::replication::ConfChange;
use prost::Message as _;

/// A register value. 0 is "absent": the node's store starts without the key.
pub type Value = u8;

/// The single key every client operation addresses.
pub const REGISTER_KEY: &[u8] = b"x";

/// An operation a client invokes on the register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientOp {
    Put(Value),
    Get,
    /// Compare-and-swap; `expected == 0` means "the key is absent".
    Cas {
        expected: Value,
        new: Value,
    },
    /// A membership change (`--membership`): not a register operation, kept out of the
    /// linearizability history.
    Reconfigure(ConfChange),
}

/// What a client accepts as the outcome of its operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientRet {
    PutOk,
    GetOk(Value),
    CasOk,
    /// The swap did not happen; the value the store held instead.
    CasFailed(Value),
    /// The configuration entry committed.
    Reconfigured,
}

/// The model's timer: one nondeterministic "time passes" event per server (see
/// `ServerActor::on_tick` for how many core ticks one event stands for).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    Tick,
}

/// A message on the model's network.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Msg {
    /// A peer message exactly as the core emitted it, except `lamport_time`, which the
    /// model zeroes (see the crate README: the Lamport clock never affects the protocol,
    /// and a stamp on every message would make every heartbeat a new state).
    Raft(Message),
    /// A client operation, sent to every server; only a leader takes it.
    Request { seq: u64, op: ClientOp },
    /// The outcome of the client's operation `seq`.
    Reply { seq: u64, ret: ClientRet },
}

impl Msg {
    fn order_key(&self) -> (u8, Vec<u8>) {
        match self {
            Msg::Raft(m) => (0, m.encode_to_vec()),
            Msg::Request { seq, op } => (1, format!("{seq}{op:?}").into_bytes()),
            Msg::Reply { seq, ret } => (2, format!("{seq}{ret:?}").into_bytes()),
        }
    }
}

// stateright orders actions (and so messages) to number them stably; prost types have
// no `Ord`, so messages order by their encoding.
impl PartialOrd for Msg {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Msg {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

/// Builds the node's `Command` for a client write.
pub fn command_for(client_id: &str, seq: u64, op: &ClientOp) -> Command {
    use faultline_node::proto::raft::{CompareAndSwap, Put};
    let op = match op {
        ClientOp::Put(value) => Op::Put(Put {
            key: REGISTER_KEY.to_vec(),
            value: vec![*value],
            ..Put::default()
        }),
        ClientOp::Cas { expected, new } => Op::CompareAndSwap(CompareAndSwap {
            key: REGISTER_KEY.to_vec(),
            expected: Some(if *expected == 0 {
                Expected::ExpectedAbsent(true)
            } else {
                Expected::ExpectedValue(vec![*expected])
            }),
            new_value: vec![*new],
        }),
        ClientOp::Get => panic!("a read is not a log entry"),
        ClientOp::Reconfigure(_) => panic!("a membership change is a configuration entry"),
    };
    Command {
        client_id: client_id.to_string(),
        sequence: seq,
        // The model has no physical time: the store stamps each write one tick above the
        // last, which keeps the space what it was.
        hlc: None,
        op: Some(op),
    }
}

/// One entry as `index@term` plus what it carries.
pub struct EntryView<'a>(pub &'a Entry);

impl fmt::Display for EntryView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = self.0;
        write!(f, "{}@{}", entry.index, entry.term)?;
        if entry.data.is_empty() {
            return write!(f, " noop");
        }
        if entry.kind == EntryKind::Config as i32 {
            return write!(f, " config");
        }
        match Command::decode(entry.data.as_slice()) {
            Ok(Command {
                client_id,
                op: Some(Op::Put(put)),
                ..
            }) => write!(f, " {client_id}:put={}", first_byte(&put.value)),
            Ok(Command {
                client_id,
                op: Some(Op::CompareAndSwap(cas)),
                ..
            }) => {
                let expected = match cas.expected {
                    Some(Expected::ExpectedValue(v)) => first_byte(&v).to_string(),
                    _ => "absent".to_string(),
                };
                write!(
                    f,
                    " {client_id}:cas {expected}->{}",
                    first_byte(&cas.new_value)
                )
            }
            _ => write!(f, " ?"),
        }
    }
}

pub fn first_byte(bytes: &[u8]) -> Value {
    bytes.first().copied().unwrap_or(0)
}

/// A peer message as one line: `RequestVote{term 2, last 1@1}`.
pub struct MessageView<'a>(pub &'a Message);

impl fmt::Display for MessageView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        let Some(body) = &m.body else {
            return write!(f, "Empty{{term {}}}", m.term);
        };
        match body {
            Body::RequestVote(rv) => write!(
                f,
                "{}{{term {}, last {}@{}}}",
                if rv.pre_vote {
                    "PreVote"
                } else {
                    "RequestVote"
                },
                m.term,
                rv.last_log_index,
                rv.last_log_term
            ),
            Body::RequestVoteResponse(r) => write!(
                f,
                "{}{{term {}, {}}}",
                if r.pre_vote {
                    "PreVoteResponse"
                } else {
                    "RequestVoteResponse"
                },
                m.term,
                if r.granted { "granted" } else { "rejected" }
            ),
            Body::AppendEntries(ae) => {
                let kind = if ae.entries.is_empty() {
                    "Heartbeat"
                } else {
                    "AppendEntries"
                };
                write!(
                    f,
                    "{kind}{{term {}, prev {}@{}",
                    m.term, ae.prev_log_index, ae.prev_log_term
                )?;
                if !ae.entries.is_empty() {
                    write!(f, ", entries [")?;
                    for (i, entry) in ae.entries.iter().enumerate() {
                        if i > 0 {
                            write!(f, ", ")?;
                        }
                        write!(f, "{}", EntryView(entry))?;
                    }
                    write!(f, "]")?;
                }
                write!(f, ", commit {}", ae.leader_commit)?;
                if ae.read_context > 0 {
                    write!(f, ", read_context {}", ae.read_context)?;
                }
                write!(f, "}}")
            }
            Body::AppendEntriesResponse(r) => {
                write!(f, "AppendEntriesResponse{{term {}, ", m.term)?;
                if r.success {
                    write!(f, "match {}", r.match_index)?;
                } else {
                    write!(
                        f,
                        "reject, conflict {}@{}",
                        r.conflict_index, r.conflict_term
                    )?;
                }
                if r.read_context > 0 {
                    write!(f, ", read_context {}", r.read_context)?;
                }
                write!(f, "}}")
            }
            Body::InstallSnapshot(s) => {
                let (index, term) = s.meta.as_ref().map_or((0, 0), |meta| {
                    (meta.last_included_index, meta.last_included_term)
                });
                write!(f, "InstallSnapshot{{term {}, last {index}@{term}}}", m.term)
            }
            Body::InstallSnapshotResponse(r) => write!(
                f,
                "InstallSnapshotResponse{{term {}, last {}}}",
                m.term, r.last_index
            ),
            Body::Quiesce(q) => write!(
                f,
                "Quiesce{{term {}, last {}, commit {}}}",
                m.term, q.last_index, q.commit
            ),
            Body::NodeHeartbeat(_) => write!(f, "NodeHeartbeat"),
            Body::TimeoutNow(_) => write!(f, "TimeoutNow{{term {}}}", m.term),
            Body::GroupRemoved(r) => write!(f, "GroupRemoved{{index {}}}", r.index),
            Body::ReplicaCheck(_) => write!(f, "ReplicaCheck"),
        }
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Raft(m) => write!(f, "{}", MessageView(m)),
            Msg::Request { seq, op } => write!(f, "Request{{#{seq} {op:?}}}"),
            Msg::Reply { seq, ret } => write!(f, "Reply{{#{seq} {ret:?}}}"),
        }
    }
}
