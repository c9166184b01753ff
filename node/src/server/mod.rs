//! The async shell around the cores: the replication thread (`driver`), the peer
//! transport, the client API and the process lifecycle. The only IO in the node.
//! See README.md in this folder.

pub mod clock;
pub mod config;
pub mod driver;
pub mod durable;
pub mod kv_service;
pub mod transport;

use std::future::Future;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::proto::admin::fault_injection_server::FaultInjectionServer;
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::kv_server::KvServer;
use crate::proto::raft::raft_server::RaftServer;
use crate::replication::{RaftCore, SeededBugs};
use crate::store::KvStore;
pub use config::NodeConfig;
use driver::{Driver, DriverOptions, Event, View};
use durable::Durable;
use kv_service::KvService;
use transport::{RaftService, Transport, TransportOptions};

/// How long a stopping node lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Seeded bugs, all off unless `--unsafe-seeded-bug` names them.
#[derive(Clone, Debug, Default)]
pub struct NodeBugs {
    pub raft: SeededBugs,
    pub no_fsync: bool,
    pub double_apply: bool,
    /// Forget the vote on restart, as if it had never been persisted.
    pub vote_amnesia: bool,
    /// Acknowledge a write once the leader appended it, before a quorum has it.
    pub early_ack: bool,
}

impl NodeBugs {
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.raft.names().into_iter().map(String::from).collect();
        if self.no_fsync {
            names.push("no-fsync".into());
        }
        if self.double_apply {
            names.push("double-apply".into());
        }
        if self.vote_amnesia {
            names.push("vote-amnesia".into());
        }
        if self.early_ack {
            names.push("early-ack".into());
        }
        names
    }
}

/// Runs a node until `shutdown` resolves or storage fails.
pub async fn run(
    config: NodeConfig,
    bugs: NodeBugs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let recovered = Durable::recover(&config.data_dir).with_context(|| {
        format!(
            "cannot recover node {} from {}",
            config.id,
            config.data_dir.display()
        )
    })?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(
            path = %torn.path.display(),
            offset = torn.offset,
            bytes = torn.bytes_dropped,
            "dropped a torn record at the end of the WAL (a write cut off by a crash, never acknowledged)"
        );
    }
    let mut recovered = recovered;
    if bugs.vote_amnesia {
        recovered.state.hard_state.voted_for = 0;
    }
    let store = match &recovered.state.snapshot {
        Some(snapshot) => {
            KvStore::restore(&snapshot.data).context("the snapshot file's state does not decode")?
        }
        None => KvStore::default(),
    };
    let mut durable = recovered.durable;
    durable.skip_fsync = bugs.no_fsync;
    tracing::info!(
        id = config.id,
        term = recovered.state.hard_state.term,
        entries = recovered.state.entries.len(),
        snapshot_index = recovered
            .state
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.last_included_index),
        "recovered"
    );
    let core = RaftCore::new(config.raft_config(bugs.raft.clone()), recovered.state);

    let (events, events_rx) = sync_channel::<Event>(config.client_queue_max);
    let (view_tx, view) = watch::channel(View::default());
    let transport_options = TransportOptions {
        source_ip: config.source_ip(),
        queue_max: config.peer_queue_max,
        batch_messages_max: config.batch_events_max,
    };
    let transport = Transport::start(
        &tokio::runtime::Handle::current(),
        &config.peers,
        &transport_options,
    );
    let clock = clock::TimerClock::default();
    let driver_options = DriverOptions {
        tick: Duration::from_millis(config.tick_ms),
        clock: clock.clone(),
        snapshot_interval_entries: config.snapshot_interval_entries,
        batch_events_max: config.batch_events_max,
        double_apply: bugs.double_apply,
        early_ack: bugs.early_ack,
        seeded_bugs: bugs.names(),
    };
    let driver = Driver::new(core, store, durable, transport, driver_options, view_tx);
    let (driver_done_tx, driver_done) = tokio::sync::oneshot::channel();
    let driver_thread = std::thread::Builder::new()
        .name("replication".into())
        .spawn(move || {
            let result = driver.run(events_rx);
            let _ = driver_done_tx.send(());
            result
        })?;

    let leaders = config
        .peers
        .iter()
        .map(|(&id, &addr)| {
            let endpoint =
                transport::node_endpoint(addr, config.source_ip(), Duration::from_millis(500));
            (id, KvClient::new(endpoint.connect_lazy()))
        })
        .collect();
    // The largest request a client may send: a compare-and-swap with two maximal values.
    let kv_request_bytes_max = config.key_bytes_max + 2 * config.value_bytes_max + 4096;
    let kv = KvService {
        node_id: config.id,
        events: events.clone(),
        view,
        leaders,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        stale_read: bugs.raft.stale_read,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another node using it?)",
                config.listen
            )
        })?;
    tracing::info!(id = config.id, listen = %config.listen, peers = ?config.peers, "serving");
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            _ = driver_done => tracing::error!("the replication thread stopped"),
        }
        let _ = stopping_tx.send(());
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = tonic::transport::Server::builder()
        .add_service(KvServer::new(kv).max_decoding_message_size(kv_request_bytes_max))
        .add_service(
            RaftServer::new(RaftService {
                events: events.clone(),
            })
            .max_decoding_message_size(transport::PEER_MESSAGE_BYTES_MAX),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(config.fault_injection.then(|| {
            tracing::warn!("fault injection is enabled: this node lets anyone step its clock");
            FaultInjectionServer::new(clock::FaultInjectionService {
                clock: clock.clone(),
            })
        }))
        .serve_with_incoming_shutdown(incoming, stop);
    // Peers' streams never end by themselves: give in-flight requests a moment to
    // finish, then close what is left.
    let served = tokio::select! {
        served = serve => served,
        () = async {
            let _ = stopping.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    let _ = events.try_send(Event::Shutdown);
    drop(events);
    let driver_result = driver_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the replication thread panicked"))?;
    driver_result.context(
        "storage failed; the node stopped so as not to acknowledge what it cannot persist",
    )?;
    served.context("the gRPC server failed")?;
    Ok(())
}
