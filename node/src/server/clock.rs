//! The clock the replication timers read, and the fault-injection service that steps
//! it. Raft's safety never depends on clocks, but its liveness does: a clock that jumps
//! makes election and heartbeat timers fire early or late, which is what the harness's
//! `clock` nemesis exercises.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tonic::{Request, Response, Status};

use crate::proto::admin::fault_injection_server::FaultInjection;
use crate::proto::admin::{ClockOffset, DropPeerMessagesRequest, DropPeerMessagesResponse};
use crate::server::transport::DropRules;

/// Steps larger than this are refused: they would only stall a node for hours.
pub const CLOCK_OFFSET_MS_MAX: i64 = 3_600_000;

#[derive(Clone, Debug, Default)]
pub struct TimerClock {
    offset_ms: Arc<AtomicI64>,
}

impl TimerClock {
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn set_offset_ms(&self, offset_ms: i64) -> i64 {
        self.offset_ms.swap(offset_ms, Ordering::Relaxed)
    }
}

pub struct FaultInjectionService {
    pub clock: TimerClock,
    pub drops: DropRules,
}

/// More rules than any harness scenario needs; a bound keeps the send path's check short.
const DROP_RULES_MAX: usize = 64;

#[tonic::async_trait]
impl FaultInjection for FaultInjectionService {
    async fn set_clock_offset(
        &self,
        request: Request<ClockOffset>,
    ) -> Result<Response<ClockOffset>, Status> {
        let offset_ms = request.into_inner().offset_ms;
        if offset_ms.abs() > CLOCK_OFFSET_MS_MAX {
            return Err(Status::invalid_argument(format!(
                "clock offset {offset_ms} ms is beyond ±{CLOCK_OFFSET_MS_MAX} ms"
            )));
        }
        tracing::warn!(offset_ms, "fault injection: the timer clock was stepped");
        let previous = self.clock.set_offset_ms(offset_ms);
        Ok(Response::new(ClockOffset {
            offset_ms: previous,
        }))
    }

    async fn drop_peer_messages(
        &self,
        request: Request<DropPeerMessagesRequest>,
    ) -> Result<Response<DropPeerMessagesResponse>, Status> {
        let request = request.into_inner();
        let rules = self
            .drops
            .update(request.clear, &request.add, DROP_RULES_MAX)
            .map_err(Status::invalid_argument)?;
        tracing::warn!(?rules, "fault injection: peer message drop rules changed");
        Ok(Response::new(DropPeerMessagesResponse { rules }))
    }
}
