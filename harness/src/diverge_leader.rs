//! The `diverge-leader` fault: a deposed leader holds log entries that conflict with
//! entries a new leader has committed at the same indices, and is then healed.
//!
//! Raft's log matching rests on a follower truncating a conflicting suffix when the leader's
//! entries disagree with its own (§5.3, AppendEntries receiver rule 3). A follower that keeps
//! it (the `keep-conflicts` seeded bug) applies entries no quorum agreed on. Cutting the leader
//! off for a while only sometimes builds that situation: the old leader may append nothing
//! while cut off, the new leader may not have reached those indices when the cut heals, or it
//! may have compacted its log and send a snapshot instead, which replaces the follower's log
//! whole. This fault waits on each node's `Status` until the situation stands:
//!
//! 1. The leader `x` of term `t` is cut off from every other node. Its last index `L0` is
//!    read after the cut, so nobody else can hold anything `x` appends later.
//! 2. `x` is made to append one write (to a key no workload uses) that it cannot commit, and
//!    whatever its clients send; it stays cut off until it has stepped down, so its log stops
//!    growing at some `L > L0`, with `(L0, L]` its own.
//! 3. A new leader `y` of a later term commits entries past `L`; the fault writes through `y`
//!    until it has. Every index in `(L0, L]` then holds an entry of `x`'s term on `x` and a
//!    committed entry of a later term on `y`. `y` must still hold its log after `x`'s commit
//!    index, so that `x` is sent those entries rather than a snapshot.
//! 4. The cut heals (when the fault's duration ends). The fault then waits for `x` to apply
//!    past `L`, and checks it caught up by entries (its snapshot index did not pass its
//!    commit index).
//!
//! A correct `x` truncates `(L0, L]` and applies `y`'s entries. One that keeps its own applies
//! the marker write among them: its state machine differs from every other node's at the same
//! applied index from then on, which the replica comparison after the run reports
//! ("REPLICAS DIVERGED"), whether or not a client reads from it. If any step does not happen
//! in time, the fault says which, as a precondition not reached.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::choreography::{
    Precondition, append_uncommittable, leader_among, put, running_nodes, status, wait_for,
};
use crate::nemesis::Nemesis;
use crate::net::namespace::node_ip;

/// Longest wait for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the healed node gets to apply past its conflicting suffix.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);
/// The key of the write the cut-off leader appends (no workload uses it).
const MARKER_KEY: &[u8] = b"faultline/diverge-leader";
/// The key the fault writes through the new leader to push its commit index along.
const PUSH_KEY: &[u8] = b"faultline/diverge-leader/push";
/// Most writes the fault sends to push the new leader's commit index past the old leader's log.
const PUSH_WRITES_MAX: u64 = 1_000;

/// What the fault set up, kept until it heals to check how the old leader caught up.
#[derive(Clone, Debug)]
pub struct Diverged {
    /// The deposed leader.
    pub node: u64,
    pub addr: SocketAddr,
    /// Its commit index and last index while cut off: `(commit_index, last_index]` is
    /// uncommitted, and everything after the index read at the cut is its alone.
    pub commit_index: u64,
    pub last_index: u64,
}

/// Sets the condition up and leaves the cut in force; the fault's end heals it. A cluster
/// the fault cannot work on (no iptables, fewer than three running nodes) is an error.
pub async fn start(nemesis: &Nemesis) -> anyhow::Result<(String, Precondition)> {
    nemesis.firewall()?;
    let nodes = running_nodes(nemesis, "diverge-leader", 3, usize::MAX).await?;
    match choreograph(nemesis, &nodes).await {
        Ok((detail, precondition)) => Ok((detail, precondition)),
        Err(error) => {
            let _ = nemesis.heal_all().await;
            *nemesis.diverged.lock().expect("diverged lock") = None;
            let why = format!("{error:#}");
            Ok((
                format!("precondition not reached: {why}"),
                Precondition::missed(why),
            ))
        }
    }
}

/// Heals the cut, then checks how the old leader caught up: by entries, past its own
/// suffix. Returns the final word on the precondition, if the fault had reached it.
pub async fn end(nemesis: &Nemesis) -> anyhow::Result<Option<Precondition>> {
    nemesis.firewall()?.heal()?;
    let Some(diverged) = nemesis.diverged.lock().expect("diverged lock").take() else {
        return Ok(None);
    };
    let Diverged {
        node,
        addr,
        commit_index,
        last_index,
    } = diverged;
    let caught_up = wait_for(
        CATCH_UP_TIMEOUT,
        "the healed node to apply past its conflicting entries",
        || async {
            let s = status(nemesis, addr).await.ok()?;
            (s.applied_index > last_index).then_some(s)
        },
    )
    .await;
    Ok(Some(match caught_up {
        Ok(s) if s.snapshot_index > commit_index => Precondition::missed(format!(
            "n{node} caught up from a snapshot at index {} (it replaces the conflicting \
             entries whole), not by being sent entries {}..={last_index}",
            s.snapshot_index,
            commit_index + 1
        )),
        Ok(s) => Precondition::reached(format!(
            "n{node} was sent committed entries of a later term at indices up to \
             {last_index}, where it held its own, and applied through {}",
            s.applied_index
        )),
        // Wedged replication is a symptom, not a missed setup: the conflict stood.
        Err(error) => Precondition::reached(format!(
            "the conflict stood at the heal, but n{node} did not apply past index \
             {last_index}: {error:#}"
        )),
    }))
}

async fn choreograph(
    nemesis: &Nemesis,
    nodes: &[(u64, SocketAddr)],
) -> anyhow::Result<(String, Precondition)> {
    let firewall = nemesis.firewall()?;
    let ip = |id: u64| -> Ipv4Addr { node_ip(id as usize - 1) };
    let addr = |id: u64| {
        nodes
            .iter()
            .find(|&&(i, _)| i == id)
            .map(|&(_, a)| a)
            .expect("known id")
    };

    // 1. Cut the leader off; what it appends from now on nobody else can have.
    let leader = leader_among(nemesis, nodes, STEP_TIMEOUT, "a leader to start from").await?;
    let (x, term) = (leader.id, leader.term);
    let cut: Vec<(Ipv4Addr, Ipv4Addr)> = nodes
        .iter()
        .filter(|&&(id, _)| id != x)
        .flat_map(|&(o, _)| [(ip(x), ip(o)), (ip(o), ip(x))])
        .collect();
    firewall.drop_links(&cut)?;
    let at_cut = status(nemesis, addr(x)).await?;
    anyhow::ensure!(
        at_cut.role == "leader" && at_cut.term == term,
        "n{x} stopped leading term {term} before it was cut off (now {} of term {})",
        at_cut.role,
        at_cut.term
    );
    let own_from = at_cut.last_index + 1;

    // 2. It appends a write it cannot commit, and stops appending once it steps down.
    append_uncommittable(
        addr(x),
        MARKER_KEY,
        format!("appended by n{x}, leader of term {term}, while cut off"),
    );
    let deposed = wait_for(
        STEP_TIMEOUT,
        "the cut-off leader to append a write and step down",
        || async {
            let s = status(nemesis, addr(x)).await.ok()?;
            (s.role != "leader" && s.last_index >= own_from).then_some(s)
        },
    )
    .await?;
    let (x_commit, x_last) = (deposed.commit_index, deposed.last_index);
    anyhow::ensure!(
        x_commit < own_from,
        "n{x} committed index {x_commit} while cut off, past what it had at the cut"
    );
    *nemesis.diverged.lock().expect("diverged lock") = Some(Diverged {
        node: x,
        addr: addr(x),
        commit_index: x_commit,
        last_index: x_last,
    });

    // 3. A new leader commits entries of its own term past the old leader's last index.
    let others: Vec<(u64, SocketAddr)> = nodes.iter().copied().filter(|&(id, _)| id != x).collect();
    let new_leader = wait_for(STEP_TIMEOUT, "a new leader in a later term", || async {
        let s = leader_among(nemesis, &others, Duration::ZERO, "")
            .await
            .ok()?;
        (s.term > term).then_some(s)
    })
    .await?;
    let y = new_leader.id;
    let mut pushes = 0;
    let committed = loop {
        let s = status(nemesis, addr(y)).await?;
        anyhow::ensure!(
            s.role == "leader" && s.term == new_leader.term,
            "n{y} stopped leading term {} before it committed past n{x}'s log",
            new_leader.term
        );
        anyhow::ensure!(
            s.snapshot_index <= x_commit,
            "n{y} compacted its log through {} (past n{x}'s commit index {x_commit}), so \
             n{x} would be sent a snapshot, not the conflicting entries",
            s.snapshot_index
        );
        if s.commit_index > x_last {
            break s.commit_index;
        }
        anyhow::ensure!(
            pushes < PUSH_WRITES_MAX,
            "n{y} had committed only through {} after {pushes} writes; n{x}'s log ends at \
             {x_last}",
            s.commit_index
        );
        pushes += 1;
        put(
            addr(y),
            PUSH_KEY,
            format!("pushes n{y}'s commit index past n{x}'s log"),
            Duration::from_secs(1),
        )
        .await
        .map_err(|e| anyhow::anyhow!("a write through the new leader n{y} failed: {e:#}"))?;
    };
    let detail = format!(
        "n{x} (leader of term {term}) cut off; it appended {own_from}..={x_last} that nobody \
         else has and stepped down (commit index {x_commit}); n{y} leads term {} and has \
         committed through {committed}, other entries at those indices{}",
        new_leader.term,
        if pushes > 0 {
            format!(" ({pushes} writes sent through it to get there)")
        } else {
            String::new()
        }
    );
    Ok((
        detail,
        Precondition::reached(format!(
            "n{x} held {own_from}..={x_last} of term {term}; n{y} committed other entries there"
        )),
    ))
}
