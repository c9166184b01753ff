//! The client actor: runs a short script of register operations one at a time, sending
//! each to every server (only a leader takes it) and accepting the first reply for it.

use std::borrow::Cow;

use stateright::actor::{Id, Out};

use super::RaftActor;
use super::messages::{ClientOp, ClientRet, Msg};

#[derive(Clone, Debug)]
pub struct ClientActor {
    pub script: Vec<ClientOp>,
    pub servers: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Index into the script of the operation in flight (or `script.len()`: done).
    pub next_op: usize,
    /// Sequence number of the operation in flight: script index + 1.
    pub awaiting: Option<u64>,
    /// What the client accepted, in order.
    pub accepted: Vec<(ClientOp, ClientRet)>,
}

/// The scripts clients run, by client number; `client_ops` keeps a prefix of each.
/// Client 1 writes then reads; client 2 swaps 1 for 2 then reads; so a read can follow
/// a write it must observe, and two writes race.
pub fn script(client: usize, client_ops: usize) -> Vec<ClientOp> {
    let full = match client {
        0 => vec![
            ClientOp::Put(1),
            ClientOp::Get,
            ClientOp::Cas {
                expected: 1,
                new: 3,
            },
        ],
        1 => vec![
            ClientOp::Cas {
                expected: 1,
                new: 2,
            },
            ClientOp::Get,
            ClientOp::Put(4),
        ],
        n => vec![ClientOp::Get, ClientOp::Put(n as u8 + 3), ClientOp::Get],
    };
    full.into_iter().take(client_ops).collect()
}

impl ClientActor {
    pub fn start(&self, o: &mut Out<RaftActor>) -> ClientState {
        let mut state = ClientState {
            next_op: 0,
            awaiting: None,
            accepted: Vec::new(),
        };
        self.invoke_next(&mut state, o);
        state
    }

    fn invoke_next(&self, state: &mut ClientState, o: &mut Out<RaftActor>) {
        let Some(op) = self.script.get(state.next_op) else {
            state.awaiting = None;
            return;
        };
        let seq = state.next_op as u64 + 1;
        state.awaiting = Some(seq);
        for server in 0..self.servers {
            o.send(
                Id::from(server),
                Msg::Request {
                    seq,
                    op: op.clone(),
                },
            );
        }
    }

    pub fn on_msg(&self, state: &mut Cow<ClientState>, msg: Msg, o: &mut Out<RaftActor>) {
        let Msg::Reply { seq, ret } = msg else { return };
        // Taking the state consumes the message even when it is a duplicate or late
        // reply, which the client then ignores.
        let state = state.to_mut();
        if state.awaiting != Some(seq) {
            return;
        }
        let op = self.script[state.next_op].clone();
        state.accepted.push((op, ret));
        state.next_op += 1;
        self.invoke_next(state, o);
    }
}
