//! The routing protocol as it looks on the wire, shared by every sender (the routing
//! client, a coordinating node) and every replica:
//!
//! - A *routed* request names the partition and the epoch its sender routed it at, in
//!   metadata (`faultline-forwarded`, `faultline-partition`, `faultline-epoch`). A replica
//!   serves it only if that partition is here, current, holds the key and is led here;
//!   otherwise it refuses. It never forwards a routed request, so a stale route costs
//!   one round trip and a correction, never a loop.
//! - A *refusal* is an `ABORTED` status (not applied) whose details are a
//!   `RouteErrorDetail`: `NotLeader{hint}`, `EpochNotMatch{current}`,
//!   `KeyNotInRange{descriptor}` or `PartitionNotHere`. [`correction`] reads it back.
//! - [`effect`] says what any other failure means for a write: definitely not applied,
//!   or unknown. Only the first may be retried without the write's idempotency key.

use std::time::Duration;

use prost::Message as _;
use tonic::{Code, Request, Status};

use crate::partitioning::convert::{from_wire, to_wire};
use crate::partitioning::{PartitionId, RangeDescriptor, RangeEpoch, RouteError};
use crate::proto::kv::{
    EpochNotMatchError, KeyNotInRangeError, NotLeaderError, PartitionNotHereError,
    RouteErrorDetail, route_error_detail,
};

const ROUTED: &str = "faultline-forwarded";
const PARTITION: &str = "faultline-partition";
const EPOCH: &str = "faultline-epoch";

/// Where a routed request was sent: the partition and the epoch its sender saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutedAt {
    pub partition: PartitionId,
    pub epoch: RangeEpoch,
}

/// The route a request carries, if it is a routed one.
pub fn routed_at<T>(request: &Request<T>) -> Option<RoutedAt> {
    let metadata = request.metadata();
    metadata.get(ROUTED)?;
    let partition = metadata.get(PARTITION)?.to_str().ok()?.parse().ok()?;
    let (version, conf_version) = metadata.get(EPOCH)?.to_str().ok()?.split_once('/')?;
    Some(RoutedAt {
        partition,
        epoch: RangeEpoch {
            version: version.parse().ok()?,
            conf_version: conf_version.parse().ok()?,
        },
    })
}

/// `message` as a request routed to `to`, due within `timeout`.
pub fn routed_request<T>(message: T, to: &RangeDescriptor, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(ROUTED, "1".parse().expect("ascii"));
    metadata.insert(
        PARTITION,
        to.id.to_string().parse().expect("digits are ascii"),
    );
    metadata.insert(
        EPOCH,
        format!("{}/{}", to.epoch.version, to.epoch.conf_version)
            .parse()
            .expect("digits are ascii"),
    );
    request.set_timeout(timeout);
    request
}

/// A replica's refusal, as the status it sends.
pub fn refusal(error: &RouteError) -> Status {
    let detail = match error {
        RouteError::NotLeader { partition, hint } => {
            route_error_detail::Error::NotLeader(NotLeaderError {
                partition: *partition,
                leader_hint: hint.unwrap_or(0),
            })
        }
        RouteError::EpochNotMatch { current, .. } => {
            route_error_detail::Error::EpochNotMatch(EpochNotMatchError {
                current: current
                    .iter()
                    .map(|d| to_wire(d, Default::default()))
                    .collect(),
            })
        }
        RouteError::KeyNotInRange { key, descriptor } => {
            route_error_detail::Error::KeyNotInRange(KeyNotInRangeError {
                key: key.clone(),
                descriptor: Some(to_wire(descriptor, Default::default())),
            })
        }
        RouteError::PartitionNotHere { partition } => {
            route_error_detail::Error::PartitionNotHere(PartitionNotHereError {
                partition: *partition,
            })
        }
    };
    let bytes = RouteErrorDetail {
        error: Some(detail),
    }
    .encode_to_vec();
    Status::with_details(Code::Aborted, format!("{error}; not applied"), bytes.into())
}

/// What a refusal tells its sender to change before it tries again.
#[derive(Clone, Debug, PartialEq)]
pub enum Correction {
    /// The partition is led elsewhere (`hint`), or its leader is not known yet (None).
    NotLeader {
        partition: PartitionId,
        hint: Option<u64>,
    },
    /// The sender's descriptors are stale: these are current for what it asked.
    Newer(Vec<RangeDescriptor>),
    /// The partition is not on the node that was asked: the sender's map is stale in a
    /// way the replica cannot fix.
    Refetch,
}

/// The correction a status carries, if it is a refusal.
pub fn correction(status: &Status) -> Option<Correction> {
    if status.code() != Code::Aborted || status.details().is_empty() {
        return None;
    }
    let detail = RouteErrorDetail::decode(status.details()).ok()?;
    let descriptors = |wire: &[crate::proto::kv::PartitionDescriptor]| {
        // A descriptor that does not decode cannot correct anything: fetch the map.
        wire.iter()
            .map(|w| from_wire(w).map(|(d, _)| d))
            .collect::<Result<Vec<_>, _>>()
            .map_or(Correction::Refetch, Correction::Newer)
    };
    Some(match detail.error? {
        route_error_detail::Error::NotLeader(e) => Correction::NotLeader {
            partition: e.partition,
            hint: (e.leader_hint != 0).then_some(e.leader_hint),
        },
        route_error_detail::Error::EpochNotMatch(e) if !e.current.is_empty() => {
            descriptors(&e.current)
        }
        route_error_detail::Error::KeyNotInRange(e) => match e.descriptor {
            Some(d) => descriptors(std::slice::from_ref(&d)),
            None => Correction::Refetch,
        },
        route_error_detail::Error::EpochNotMatch(_)
        | route_error_detail::Error::PartitionNotHere(_) => Correction::Refetch,
    })
}

/// What a failed call means for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It was refused or never reached a node: it did not happen.
    NotApplied,
    /// It may have happened, now or later.
    Unknown,
}

pub fn effect(status: &Status) -> Effect {
    match status.code() {
        Code::InvalidArgument
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::OutOfRange => Effect::NotApplied,
        _ if never_sent(status) => Effect::NotApplied,
        _ => Effect::Unknown,
    }
}

/// Whether the request cannot have reached a node: the connection was never made.
pub fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        let text = error.to_string();
        if text.contains("tcp connect error") || text.contains("Connection refused") {
            return true;
        }
        source = error.source();
    }
    status.message().contains("tcp connect error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::KeySpan;

    fn descriptor(id: u64) -> RangeDescriptor {
        RangeDescriptor {
            id,
            span: KeySpan::Range {
                start: b"m".to_vec(),
                end: Vec::new(),
            },
            epoch: RangeEpoch {
                version: 3,
                conf_version: 1,
            },
            replicas: vec![1, 2, 3],
            leader: Some(2),
            leader_term: 4,
            learners: Vec::new(),
        }
    }

    #[test]
    fn a_routed_request_carries_its_partition_and_epoch() {
        let request = routed_request((), &descriptor(7), Duration::from_secs(1));
        assert_eq!(
            routed_at(&request),
            Some(RoutedAt {
                partition: 7,
                epoch: descriptor(7).epoch
            })
        );
        assert_eq!(routed_at(&Request::new(())), None);
    }

    #[test]
    fn every_refusal_reads_back_as_its_correction() {
        let cases = [
            (
                RouteError::NotLeader {
                    partition: 7,
                    hint: Some(3),
                },
                Correction::NotLeader {
                    partition: 7,
                    hint: Some(3),
                },
            ),
            (
                RouteError::NotLeader {
                    partition: 7,
                    hint: None,
                },
                Correction::NotLeader {
                    partition: 7,
                    hint: None,
                },
            ),
            (
                RouteError::EpochNotMatch {
                    requested: RangeEpoch::default(),
                    current: vec![descriptor(7)],
                },
                Correction::Newer(vec![descriptor(7)]),
            ),
            (
                RouteError::KeyNotInRange {
                    key: b"a".to_vec(),
                    descriptor: Box::new(descriptor(7)),
                },
                Correction::Newer(vec![descriptor(7)]),
            ),
            (
                RouteError::PartitionNotHere { partition: 7 },
                Correction::Refetch,
            ),
        ];
        for (error, expected) in cases {
            let status = refusal(&error);
            assert_eq!(effect(&status), Effect::NotApplied, "{error}");
            assert_eq!(correction(&status), Some(expected), "{error}");
        }
    }

    #[test]
    fn other_failures_carry_no_correction_and_a_deadline_is_unknown() {
        assert_eq!(correction(&Status::aborted("leadership changed")), None);
        let deadline = Status::unavailable("not committed before the deadline");
        assert_eq!(correction(&deadline), None);
        assert_eq!(effect(&deadline), Effect::Unknown);
        assert_eq!(
            effect(&Status::unavailable("tcp connect error: refused")),
            Effect::NotApplied
        );
    }
}
