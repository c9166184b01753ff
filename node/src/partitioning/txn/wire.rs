//! The participant's requests, answers and state as the partition's log and snapshots hold
//! them (`faultline.raft.v1.TxnPart*`): fixed-width integers and bytes, decoded back to the
//! core's types with every field checked.

use crate::proto::raft::{
    TxnPart, TxnPartAppend, TxnPartReply, TxnPartStatus, TxnPartWrite, txn_part, txn_part_reply,
    txn_part_status,
};

use super::{Key, Level, Part, Refusal, Reply, Request, TxnMeta, TxnStatus, Value};

/// A status on the wire.
pub fn status_to_wire(status: TxnStatus) -> TxnPartStatus {
    let (kind, commit_ts) = match status {
        TxnStatus::Pending => (txn_part_status::Kind::Pending, 0),
        TxnStatus::Committed(ts) => (txn_part_status::Kind::Committed, ts),
        TxnStatus::Aborted => (txn_part_status::Kind::Aborted, 0),
    };
    TxnPartStatus {
        kind: kind as i32,
        commit_ts,
    }
}

/// A status from the wire; absent is pending.
pub fn status_from_wire(status: Option<&TxnPartStatus>) -> Result<TxnStatus, String> {
    let Some(status) = status else {
        return Ok(TxnStatus::Pending);
    };
    match txn_part_status::Kind::try_from(status.kind) {
        Ok(txn_part_status::Kind::Pending) => Ok(TxnStatus::Pending),
        Ok(txn_part_status::Kind::Committed) => Ok(TxnStatus::Committed(status.commit_ts)),
        Ok(txn_part_status::Kind::Aborted) => Ok(TxnStatus::Aborted),
        Err(_) => Err(format!("unknown transaction status {}", status.kind)),
    }
}

/// A key and value (or delete) on the wire.
pub fn write_to_wire(key: &[u8], value: &Value) -> TxnPartWrite {
    TxnPartWrite {
        key: key.to_vec(),
        value: value.clone().unwrap_or_default(),
        delete: value.is_none(),
    }
}

/// A key and value (or delete) from the wire.
pub fn write_from_wire(write: &TxnPartWrite) -> (Key, Value) {
    (
        write.key.clone(),
        (!write.delete).then(|| write.value.clone()),
    )
}

/// A request as a log entry's command.
pub fn request_to_wire(request: &Request) -> TxnPart {
    use txn_part::Kind;
    let mut wire = TxnPart::default();
    match request {
        Request::Prepare { meta, part, now } => {
            wire.kind = Kind::Prepare as i32;
            wire.id = meta.id;
            wire.primary = meta.primary;
            wire.participants = meta.participants.clone();
            wire.start_ts = meta.start_ts;
            wire.isolation = match meta.isolation {
                Level::Serializable => 0,
                Level::Snapshot => 1,
                Level::ReadCommitted => 2,
            };
            wire.reads = part.reads.clone();
            wire.writes = part
                .writes
                .iter()
                .map(|(k, v)| write_to_wire(k, v))
                .collect();
            wire.appends = part
                .appends
                .iter()
                .map(|(key, elements)| TxnPartAppend {
                    key: key.clone(),
                    elements: elements.clone(),
                })
                .collect();
            wire.now = *now;
        }
        Request::Commit { id, commit_ts } => {
            wire.kind = Kind::Commit as i32;
            wire.id = *id;
            wire.commit_ts = *commit_ts;
        }
        Request::Abort { id } => {
            wire.kind = Kind::Abort as i32;
            wire.id = *id;
        }
        Request::Heartbeat { id, now } => {
            wire.kind = Kind::Heartbeat as i32;
            wire.id = *id;
            wire.now = *now;
        }
        Request::Recover { id, now, ttl } => {
            wire.kind = Kind::Recover as i32;
            wire.id = *id;
            wire.now = *now;
            wire.ttl = *ttl;
        }
        Request::Query { id } => {
            wire.kind = Kind::Query as i32;
            wire.id = *id;
        }
        Request::Resolve { id, status } => {
            wire.kind = Kind::Resolve as i32;
            wire.id = *id;
            wire.status = Some(status_to_wire(*status));
        }
    }
    wire
}

/// A request from a log entry's command.
pub fn request_from_wire(wire: &TxnPart) -> Result<Request, String> {
    use txn_part::Kind;
    let id = wire.id;
    Ok(match Kind::try_from(wire.kind) {
        Ok(Kind::Prepare) => {
            if !wire.participants.contains(&wire.primary) {
                return Err(format!(
                    "transaction {id}: its primary {} is not among its participants {:?}",
                    wire.primary, wire.participants
                ));
            }
            Request::Prepare {
                meta: TxnMeta {
                    id,
                    primary: wire.primary,
                    participants: wire.participants.clone(),
                    start_ts: wire.start_ts,
                    isolation: match wire.isolation {
                        0 => Level::Serializable,
                        1 => Level::Snapshot,
                        2 => Level::ReadCommitted,
                        other => {
                            return Err(format!(
                                "transaction {id}: unknown isolation level {other}"
                            ));
                        }
                    },
                },
                part: Part {
                    reads: wire.reads.clone(),
                    writes: wire.writes.iter().map(write_from_wire).collect(),
                    appends: wire
                        .appends
                        .iter()
                        .map(|a| (a.key.clone(), a.elements.clone()))
                        .collect(),
                },
                now: wire.now,
            }
        }
        Ok(Kind::Commit) => Request::Commit {
            id,
            commit_ts: wire.commit_ts,
        },
        Ok(Kind::Abort) => Request::Abort { id },
        Ok(Kind::Heartbeat) => Request::Heartbeat { id, now: wire.now },
        Ok(Kind::Recover) => Request::Recover {
            id,
            now: wire.now,
            ttl: wire.ttl,
        },
        Ok(Kind::Query) => Request::Query { id },
        Ok(Kind::Resolve) => {
            let status = status_from_wire(wire.status.as_ref())?;
            if !status.is_final() {
                return Err(format!("transaction {id}: resolve needs a decision"));
            }
            Request::Resolve { id, status }
        }
        Err(_) => return Err(format!("unknown participant request kind {}", wire.kind)),
    })
}

/// An answer as an apply result carries it.
pub fn reply_to_wire(reply: &Reply) -> TxnPartReply {
    use txn_part_reply::{Kind, Refusal as R};
    let mut wire = TxnPartReply::default();
    match reply {
        Reply::Prepared { id, reads } => {
            wire.kind = Kind::Prepared as i32;
            wire.id = *id;
            wire.reads = reads.iter().map(|(k, v)| write_to_wire(k, v)).collect();
        }
        Reply::Refused { id, reason } => {
            wire.kind = Kind::Refused as i32;
            wire.id = *id;
            match reason {
                Refusal::Conflict {
                    key,
                    other,
                    primary,
                } => {
                    wire.refusal = R::Conflict as i32;
                    wire.key = key.clone();
                    wire.other = *other;
                    wire.other_primary = *primary;
                }
                Refusal::TooOld { key, committed_at } => {
                    wire.refusal = R::TooOld as i32;
                    wire.key = key.clone();
                    wire.committed_at = *committed_at;
                }
                Refusal::AlreadyDecided(status) => {
                    wire.refusal = R::AlreadyDecided as i32;
                    wire.status = Some(status_to_wire(*status));
                }
                Refusal::Invalid { key, why } => {
                    wire.refusal = R::Invalid as i32;
                    wire.key = key.clone();
                    wire.why = why.clone();
                }
            }
        }
        Reply::Status { id, status } => {
            wire.kind = Kind::Status as i32;
            wire.id = *id;
            wire.status = Some(status_to_wire(*status));
        }
        Reply::Resolved { id } => {
            wire.kind = Kind::Resolved as i32;
            wire.id = *id;
        }
    }
    wire
}

/// An answer from an apply result.
pub fn reply_from_wire(wire: &TxnPartReply) -> Result<Reply, String> {
    use txn_part_reply::{Kind, Refusal as R};
    let id = wire.id;
    Ok(match Kind::try_from(wire.kind) {
        Ok(Kind::Prepared) => Reply::Prepared {
            id,
            reads: wire.reads.iter().map(write_from_wire).collect(),
        },
        Ok(Kind::Refused) => Reply::Refused {
            id,
            reason: match R::try_from(wire.refusal) {
                Ok(R::Conflict) => Refusal::Conflict {
                    key: wire.key.clone(),
                    other: wire.other,
                    primary: wire.other_primary,
                },
                Ok(R::TooOld) => Refusal::TooOld {
                    key: wire.key.clone(),
                    committed_at: wire.committed_at,
                },
                Ok(R::AlreadyDecided) => {
                    Refusal::AlreadyDecided(status_from_wire(wire.status.as_ref())?)
                }
                Ok(R::Invalid) => Refusal::Invalid {
                    key: wire.key.clone(),
                    why: wire.why.clone(),
                },
                Err(_) => return Err(format!("unknown refusal {}", wire.refusal)),
            },
        },
        Ok(Kind::Status) => Reply::Status {
            id,
            status: status_from_wire(wire.status.as_ref())?,
        },
        Ok(Kind::Resolved) => Reply::Resolved { id },
        Err(_) => return Err(format!("unknown participant reply kind {}", wire.kind)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_and_reply_round_trips() {
        let meta = TxnMeta {
            id: 9,
            primary: 2,
            participants: vec![2, 5],
            start_ts: 1 << 40,
            isolation: Level::Snapshot,
        };
        let requests = [
            Request::Prepare {
                meta,
                part: Part {
                    reads: vec![b"a".to_vec()],
                    writes: vec![(b"b".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), None)],
                    appends: vec![(b"d".to_vec(), vec![b"3".to_vec(), b"4".to_vec()])],
                },
                now: 77,
            },
            Request::Commit {
                id: 9,
                commit_ts: 5,
            },
            Request::Abort { id: 9 },
            Request::Query { id: 9 },
            Request::Heartbeat { id: 9, now: 3 },
            Request::Recover {
                id: 9,
                now: 3,
                ttl: 2_000,
            },
            Request::Resolve {
                id: 9,
                status: TxnStatus::Committed(5),
            },
        ];
        for request in requests {
            assert_eq!(request_from_wire(&request_to_wire(&request)), Ok(request));
        }
        let replies = [
            Reply::Prepared {
                id: 9,
                reads: vec![(b"a".to_vec(), None), (b"b".to_vec(), Some(b"x".to_vec()))],
            },
            Reply::Refused {
                id: 9,
                reason: Refusal::Conflict {
                    key: b"a".to_vec(),
                    other: 4,
                    primary: 5,
                },
            },
            Reply::Refused {
                id: 9,
                reason: Refusal::TooOld {
                    key: b"a".to_vec(),
                    committed_at: 8,
                },
            },
            Reply::Refused {
                id: 9,
                reason: Refusal::AlreadyDecided(TxnStatus::Aborted),
            },
            Reply::Refused {
                id: 9,
                reason: Refusal::Invalid {
                    key: b"d".to_vec(),
                    why: "not a list".to_string(),
                },
            },
            Reply::Status {
                id: 9,
                status: TxnStatus::Pending,
            },
            Reply::Resolved { id: 9 },
        ];
        for reply in replies {
            assert_eq!(reply_from_wire(&reply_to_wire(&reply)), Ok(reply));
        }
    }

    #[test]
    fn malformed_requests_are_refused_with_the_reason() {
        let mut wire = request_to_wire(&Request::Abort { id: 1 });
        wire.kind = 99;
        assert!(request_from_wire(&wire).unwrap_err().contains("unknown"));
        let wire = request_to_wire(&Request::Resolve {
            id: 1,
            status: TxnStatus::Aborted,
        });
        let mut pending = wire.clone();
        pending.status = None;
        assert!(
            request_from_wire(&pending)
                .unwrap_err()
                .contains("decision")
        );
        let mut prepare = request_to_wire(&Request::Prepare {
            meta: TxnMeta {
                id: 1,
                primary: 3,
                participants: vec![3],
                start_ts: 0,
                isolation: crate::partitioning::txn::Level::Serializable,
            },
            part: Part {
                reads: vec![],
                writes: vec![],
                appends: Vec::new(),
            },
            now: 0,
        });
        prepare.participants = vec![4];
        assert!(request_from_wire(&prepare).unwrap_err().contains("primary"));
    }
}
