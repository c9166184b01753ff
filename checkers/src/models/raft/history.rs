//! Auxiliary history (TLA+'s "history variables"): what happened over the whole run,
//! recorded from the messages actors send and accept.

use std::collections::{BTreeMap, BTreeSet};

use faultline_node::proto::raft::message::Body;
use stateright::actor::{Envelope, Id};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use super::ModelConfig;
use super::messages::{ClientOp, ClientRet, Msg, Value};

/// The sequential specification: one register with put, get and compare-and-swap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegisterSpec(pub Value);

impl SequentialSpec for RegisterSpec {
    type Op = ClientOp;
    type Ret = ClientRet;

    fn invoke(&mut self, op: &ClientOp) -> ClientRet {
        match op {
            ClientOp::Put(value) => {
                self.0 = *value;
                ClientRet::PutOk
            }
            ClientOp::Get => ClientRet::GetOk(self.0),
            ClientOp::Cas { expected, new } => {
                if self.0 == *expected {
                    self.0 = *new;
                    ClientRet::CasOk
                } else {
                    ClientRet::CasFailed(self.0)
                }
            }
            // Never invoked: membership changes stay out of the history.
            ClientOp::Reconfigure(_) => ClientRet::Reconfigured,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct History {
    /// Invocations when a client sends an operation, returns when it accepts a reply.
    pub linearizability: LinearizabilityTester<Id, RegisterSpec>,
    /// Client -> sequence of its operation in flight.
    pub in_flight: BTreeMap<Id, u64>,
    /// Every (term, node) that ever acted as leader: only a leader sends AppendEntries
    /// or InstallSnapshot, and a new leader sends them in the step it is elected.
    pub leaders: BTreeSet<(u64, u64)>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            linearizability: LinearizabilityTester::new(RegisterSpec::default()),
            in_flight: BTreeMap::new(),
            leaders: BTreeSet::new(),
        }
    }
}

pub fn record_out(
    _cfg: &ModelConfig,
    history: &History,
    envelope: Envelope<&Msg>,
) -> Option<History> {
    match envelope.msg {
        Msg::Raft(message) => {
            let leads = matches!(
                message.body,
                Some(Body::AppendEntries(_)) | Some(Body::InstallSnapshot(_))
            );
            let seen = (message.term, message.from);
            if !leads || history.leaders.contains(&seen) {
                return None;
            }
            let mut history = history.clone();
            history.leaders.insert(seen);
            Some(history)
        }
        Msg::Request {
            op: ClientOp::Reconfigure(_),
            ..
        } => None,
        Msg::Request { seq, op } => {
            // A client sends one operation to every server: the first copy invokes it.
            if history.in_flight.get(&envelope.src) == Some(seq) {
                return None;
            }
            let mut history = history.clone();
            // An error marks the history invalid, which the property reports.
            let _ = history.linearizability.on_invoke(envelope.src, op.clone());
            history.in_flight.insert(envelope.src, *seq);
            Some(history)
        }
        Msg::Reply { .. } => None,
    }
}

pub fn record_in(
    _cfg: &ModelConfig,
    history: &History,
    envelope: Envelope<&Msg>,
) -> Option<History> {
    let Msg::Reply { seq, ret } = envelope.msg else {
        return None;
    };
    if *ret == ClientRet::Reconfigured {
        return None;
    }
    // The client accepts exactly the reply to its operation in flight.
    if history.in_flight.get(&envelope.dst) != Some(seq) {
        return None;
    }
    let mut history = history.clone();
    let _ = history.linearizability.on_return(envelope.dst, ret.clone());
    history.in_flight.remove(&envelope.dst);
    Some(history)
}
