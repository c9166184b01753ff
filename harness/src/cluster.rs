//! A cluster of real `faultline-node` child processes on this machine.
//!
//! Every node runs in its own process group with a parent-death signal, and the
//! cluster kills what is left when dropped, so no node outlives the harness.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{GroupStatus, StatusRequest};
use faultline_node::server::transport::node_endpoint;

pub struct NodeProcess {
    pub id: u64,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// For a node added after the cluster formed: the node it joins through.
    pub joins_via: Option<SocketAddr>,
    child: Option<Child>,
}

pub struct LocalCluster {
    node_bin: PathBuf,
    nodes: Vec<NodeProcess>,
    /// Where the nodes' directories are.
    root: PathBuf,
    next_id: u64,
    extra_args: Vec<String>,
}

/// Addresses on loopback with ports that are free now and below the kernel's ephemeral
/// range. A port from the ephemeral range (what binding port 0 returns) can be handed out
/// again as the source port of an outgoing connection while its node is down, or a peer
/// redialing it can connect to itself there (TCP simultaneous open); either way the
/// restarted node cannot bind its address. Ports below the range are never handed out.
pub fn free_loopback_addrs(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // One cursor per process so tests running side by side never pick the same port; the
    // start is spread by pid so two harness processes rarely walk the same ports.
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ceiling = ephemeral_floor().max(LOWEST + 1_000);
    let span = ceiling - LOWEST;
    let _ = CURSOR.compare_exchange(
        0,
        (std::process::id().wrapping_mul(7_919)) % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut addrs = Vec::with_capacity(count);
    let mut tried = 0;
    while addrs.len() < count {
        anyhow::ensure!(
            tried < span,
            "no free loopback port between {LOWEST} and {ceiling}: free some, or lower \
             net.ipv4.ip_local_port_range's start"
        );
        tried += 1;
        let port = LOWEST + CURSOR.fetch_add(1, Ordering::Relaxed) % span;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            addrs.push(listener.local_addr()?);
        }
    }
    Ok(addrs)
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_floor() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .filter(|&port: &u32| port <= 65_535)
        .unwrap_or(32_768)
}

/// Finds the `faultline-node` binary: `FAULTLINE_NODE_BIN`, or beside this executable
/// (cargo puts every binary of the workspace in the same target directory).
pub fn find_node_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAULTLINE_NODE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("faultline-node");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "cannot find the faultline-node binary next to {}; build it with `cargo build --release -p faultline-node` or pass --node-bin",
        exe.display()
    )
}

impl LocalCluster {
    /// Lays out (but does not start) one node per address under `root`.
    pub fn new(
        node_bin: &Path,
        root: &Path,
        addrs: &[SocketAddr],
        extra_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = root.join("nodes").join(id.to_string());
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            nodes.push(NodeProcess {
                id,
                addr,
                data_dir: dir.join("data"),
                log_path: dir.join("log"),
                joins_via: None,
                child: None,
            });
        }
        // The placement driver moves replicas and leaders on its own; a test or run that
        // wants it asks for it, so that nothing else reshapes a cluster behind its back.
        let mut extra_args = extra_args;
        if !extra_args.iter().any(|a| a.starts_with("--placement")) {
            extra_args.extend(["--placement".to_string(), "off".to_string()]);
        }
        // Load-based splitting likewise: a busy range would split under a test that did
        // not ask for it.
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--hot-ops-per-sec"))
        {
            extra_args.extend(["--hot-ops-per-sec".to_string(), "0".to_string()]);
        }
        Ok(Self {
            node_bin: node_bin.to_path_buf(),
            next_id: nodes.len() as u64 + 1,
            nodes,
            extra_args,
            root: root.to_path_buf(),
        })
    }

    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Id and address of every node whose process is running.
    pub fn running(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| (n.id, n.addr))
            .collect()
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        self.node(id).addr
    }

    /// Each time a node refused to start because it could not recover its own data
    /// directory, from its log: the refusal's message, per node that had one.
    pub fn recovery_refusals(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .filter_map(|node| {
                let log = std::fs::read_to_string(&node.log_path).ok()?;
                let refusals: Vec<&str> = log
                    .lines()
                    .filter(|l| l.starts_with("faultline-node: error: cannot recover"))
                    .collect();
                let first = refusals.first()?;
                let times = match refusals.len() {
                    1 => String::new(),
                    n => format!(" ({n} times)"),
                };
                Some((
                    node.id,
                    format!(
                        "{}{times}",
                        first.trim_start_matches("faultline-node: error: ")
                    ),
                ))
            })
            .collect()
    }

    fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("node {id} is not part of this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("node {id} is not part of this cluster"))
    }

    /// Stops a node removed from the cluster and stops counting it as one of the
    /// cluster's (healing no longer restarts it); its files stay for the record.
    pub fn forget(&mut self, id: u64) -> anyhow::Result<()> {
        if self.is_running(id) {
            self.kill(id)?;
        }
        self.nodes.retain(|n| n.id != id);
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    /// The id the next added node gets (ids are never reused).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Lays out (but does not start) one more node at `addr`, which joins the running
    /// cluster through node `via` when started. Returns its id.
    pub fn add_joining_node(&mut self, addr: SocketAddr, via: u64) -> anyhow::Result<u64> {
        // Ids are not reused, even for a node forgotten since.
        let id = self.next_id;
        self.next_id += 1;
        let dir = self.root.join("nodes").join(id.to_string());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let joins_via = Some(self.addr(via));
        self.nodes.push(NodeProcess {
            id,
            addr,
            data_dir: dir.join("data"),
            log_path: dir.join("log"),
            joins_via,
            child: None,
        });
        Ok(id)
    }

    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        // The nodes the cluster was formed with know each other by flags; one that joined
        // later learns them from the cluster, and they learn it the same way.
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != id && n.joins_via.is_none())
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect();
        let node = self.node(id);
        let joins_via = node.joins_via;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .with_context(|| format!("cannot open {}", node.log_path.display()))?;
        let mut command = Command::new(&self.node_bin);
        command
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(node.addr.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir);
        match joins_via {
            Some(via) => {
                command.arg("--join").arg(via.to_string());
                command.args(without_layout_flags(&self.extra_args));
            }
            None => {
                for peer in &peers {
                    command.arg("--peer").arg(peer);
                }
                command.args(&self.extra_args);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the
        // child when this process dies, so a crashed harness leaves no node behind.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} for node {id}", self.node_bin.display()))?;
        self.node_mut(id).child = Some(child);
        Ok(())
    }

    /// Sends `signal` to the node's process.
    pub fn signal(&self, id: u64, signal: i32) -> anyhow::Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot signal node {id}"));
        }
        Ok(())
    }

    /// Whether the node's process has exited by itself (a failpoint's exit); reaped if so.
    pub fn exited(&mut self, id: u64) -> anyhow::Result<bool> {
        let node = self.node_mut(id);
        let Some(child) = node.child.as_mut() else {
            return Ok(false);
        };
        if child
            .try_wait()
            .with_context(|| format!("cannot check on node {id}"))?
            .is_some()
        {
            node.child = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("cannot reap node {id}"))?;
        }
        Ok(())
    }

    /// SIGTERM, and SIGKILL if it has not exited after `grace`. Ok(true) when it exited
    /// by itself with success; Ok(false) when it had to be killed. An Err says the
    /// node had already exited, with its status and the end of its log.
    pub fn stop(&mut self, id: u64, grace: Duration) -> anyhow::Result<bool> {
        let log_path = self.node(id).log_path.clone();
        let Some(mut child) = self.node_mut(id).child.take() else {
            return Ok(true);
        };
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "node {id} had already exited ({status}); its log ends:\n{}",
                log_tail(&log_path, 5)
            );
        }
        // SAFETY: kill(2) on our own unreaped child; a paused node is continued so that
        // it can handle SIGTERM.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGCONT);
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait()?;
        Ok(false)
    }

    /// Polls the node's status until it answers.
    pub async fn wait_until_serving(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match status(self.addr(id)).await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    anyhow::bail!(
                        "node {id} did not answer within {timeout:?}: {error:#}; see {}",
                        self.node(id).log_path.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Polls every running node until every Raft group it hosts has a leader that a
    /// majority of the group's voters agree on. Returns the leader of the first data
    /// partition (of the consistent core if there is none).
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut unled = Vec::new();
        while Instant::now() < deadline {
            // group -> what each node hosting it says
            let mut groups: BTreeMap<u64, Vec<(u64, GroupStatus)>> = BTreeMap::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(status) = status_all_groups(node.addr).await {
                    for g in status.groups {
                        groups.entry(g.group_id).or_default().push((node.id, g));
                    }
                }
            }
            unled.clear();
            let mut leaders = BTreeMap::new();
            for (&group, seen) in &groups {
                let agreed = seen.iter().find_map(|(id, g)| {
                    let agreeing = seen.iter().filter(|(_, o)| o.leader_id == *id).count();
                    (g.role == "leader" && agreeing > g.voters.len() / 2).then_some(*id)
                });
                match agreed {
                    Some(leader) => {
                        leaders.insert(group, leader);
                    }
                    None => unled.push((
                        group,
                        seen.iter()
                            .map(|(id, g)| (*id, g.role.clone(), g.leader_id, g.term))
                            .collect::<Vec<_>>(),
                    )),
                }
            }
            if !groups.is_empty() && unled.is_empty() {
                let first = leaders
                    .iter()
                    .find(|(g, _)| **g != 0)
                    .or_else(|| leaders.iter().next())
                    .map(|(_, l)| *l)
                    .expect("at least one group");
                return Ok(first);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "some groups have no leader agreed on by a majority of their voters within {timeout:?}; their last statuses (group, [(id, role, leader, term)]): {unled:?}"
        )
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The node arguments without the layout flags, which a joining node must leave out (it
/// takes the layout from the cluster).
fn without_layout_flags(args: &[String]) -> Vec<String> {
    const LAYOUT: [&str; 4] = ["--partitions", "--partitioning", "--split-at", "--replicas"];
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if LAYOUT.contains(&arg.as_str()) {
            skip_value = true;
            continue;
        }
        if LAYOUT
            .iter()
            .any(|flag| arg.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        kept.push(arg.clone());
    }
    kept
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub async fn status(addr: SocketAddr) -> anyhow::Result<faultline_node::proto::kv::StatusResponse> {
    status_request(addr, StatusRequest::default()).await
}

/// Status with the digest of the node's state machine as it stood at `index` (0: at its
/// applied index); no digest if the node no longer remembers that state.
pub async fn status_with_digest(
    addr: SocketAddr,
    index: u64,
) -> anyhow::Result<faultline_node::proto::kv::StatusResponse> {
    group_status_with_digest(addr, None, index).await
}

/// The same for one Raft group of the node (None: its first data partition).
pub async fn group_status_with_digest(
    addr: SocketAddr,
    group: Option<u64>,
    index: u64,
) -> anyhow::Result<faultline_node::proto::kv::StatusResponse> {
    let request = StatusRequest {
        state_digest: true,
        digest_index: index,
        group_id: group,
        all_groups: false,
    };
    status_request(addr, request).await
}

/// Status with every group the node hosts listed in `groups`.
pub async fn status_all_groups(
    addr: SocketAddr,
) -> anyhow::Result<faultline_node::proto::kv::StatusResponse> {
    let request = StatusRequest {
        all_groups: true,
        ..StatusRequest::default()
    };
    status_request(addr, request).await
}

async fn status_request(
    addr: SocketAddr,
    request: StatusRequest,
) -> anyhow::Result<faultline_node::proto::kv::StatusResponse> {
    let endpoint =
        node_endpoint(addr, None, Duration::from_millis(300)).timeout(Duration::from_millis(500));
    let mut client = KvClient::new(endpoint.connect().await?);
    Ok(client.status(request).await?.into_inner())
}
