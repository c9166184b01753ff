//! The `restart-voter` fault: two candidates ask one voter for its vote in the same term,
//! and the voter is restarted in between.
//!
//! Raft's election safety (at most one leader per term) rests on a vote surviving a crash:
//! a node persists `voted_for` before it answers. Random kills almost never test that,
//! because the window is tiny: the new leader's first append reaches the voter a round
//! trip after the vote, and once the voter holds an entry of the new term, a candidate
//! without one is refused by the log check anyway. This fault makes the window wide and
//! puts a second candidate in it, using only real faults:
//!
//! 1. The leader `x` is cut off from both followers and made to append one write it cannot
//!    commit, so that its log is longer than theirs and it refuses their votes. The follower
//!    with the longer log becomes the late candidate `y`, the other the voter `b`. `y`'s
//!    clock is stepped back at once, which holds its ticks: it stays a follower of term `t`
//!    within its leader lease, so it refuses the voter's pre-votes. Nobody can win.
//! 2. When `x` has stepped down, `b` is restarted (so that nothing `x` sent while it led is
//!    still on its way to it) and the link `x -> b` reopens slowed down ([`LINK_DELAY`], by
//!    holding its packets through NFQUEUE); `b -> x` reopens at full speed.
//! 3. `x` times out and wins term `t + 1` with `b`'s vote. Its first append takes
//!    [`LINK_DELAY`] to reach `b`; before it arrives, `b` is killed, `x`'s ticks are held
//!    (its connection to `b` takes a while to come back over the slow link, and its
//!    check-quorum must not count that time), and `b` is started again.
//! 4. `y`'s clock is stepped forward past an election timeout: it campaigns at once, in
//!    term `t + 1`, which it never heard of, and asks the restarted `b`. Then `x` ticks on.
//!
//! A correct `b` remembers its vote and refuses `y` (already at the pre-vote); then `x`'s
//! appends arrive and `b` follows `x`. A `b` that lost its vote (the `vote-amnesia` seeded
//! bug) elects `y` too: two leaders of one term, each committing writes with `b`'s
//! acknowledgements, which the checker and the replica comparison then see.
//!
//! The timings assume the node's default timing (10 ms ticks, elections after 150-300 ms):
//! the delay must be shorter than a leader's check-quorum period, or `x` steps down before
//! `b`'s acknowledgements return.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::choreography::{
    Precondition, append_uncommittable, leader_among, running_nodes, status, wait_for,
};
use crate::nemesis::{Nemesis, set_clock_offset};
use crate::net::delay::LinkDelay;
use crate::net::namespace::node_ip;

/// How long packets from the new leader to the voter are held: the window in which the
/// voter is restarted and the second candidate is elected.
pub const LINK_DELAY: Duration = Duration::from_millis(60);
/// NFQUEUE queue number of the slowed link.
const QUEUE_NUM: u16 = 0;
/// A backward step that holds a node's ticks until it is undone.
const FREEZE_MS: i64 = -600_000;
/// A forward step (from real time) past the longest default election timeout (300 ms).
const CAMPAIGN_MS: i64 = 400;
/// Longest wait for any one step of the choreography.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// The key of the write the cut-off leader appends (no workload uses it).
const MARKER_KEY: &[u8] = b"faultline/restart-voter";
/// How long to watch whether the second candidate wins.
const WATCH: Duration = Duration::from_millis(500);

/// Runs the choreography. A cluster it cannot work on (no iptables, not three running
/// nodes) is an error: nothing was injected. A step that does not happen in time leaves
/// the precondition unreached; everything done so far is undone, so that the run goes on
/// with a healthy cluster.
pub async fn start(nemesis: &Nemesis) -> anyhow::Result<(String, Precondition)> {
    nemesis.firewall()?;
    let nodes = running_nodes(nemesis, "restart-voter", 3, 3).await?;
    match choreograph(nemesis, &nodes).await {
        Ok((detail, second_leader)) => {
            let what = if second_leader {
                "a second candidate asked the restarted voter in the same term, and won"
            } else {
                "a second candidate asked the restarted voter in the same term"
            };
            Ok((detail, Precondition::reached(what)))
        }
        Err(error) => {
            let _ = end(nemesis).await;
            let why = format!("{error:#}");
            Ok((
                format!("precondition not reached: {why}"),
                Precondition::missed(why),
            ))
        }
    }
}

/// Heals everything the fault did: clocks first (while every node it stepped still runs),
/// then links, the slowed link's queue and dead nodes.
pub async fn end(nemesis: &Nemesis) -> anyhow::Result<()> {
    let clocks = nemesis.reset_clocks().await;
    let rest = nemesis.heal_all().await;
    match (clocks, rest) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(clocks), Err(rest)) => anyhow::bail!("{clocks:#}; {rest:#}"),
    }
}

async fn choreograph(
    nemesis: &Nemesis,
    nodes: &[(u64, SocketAddr)],
) -> anyhow::Result<(String, bool)> {
    let firewall = nemesis.firewall()?;
    let ids: Vec<u64> = nodes.iter().map(|&(id, _)| id).collect();
    let addr = |id: u64| nodes[ids.iter().position(|&i| i == id).expect("known id")].1;
    let ip = |id: u64| -> Ipv4Addr { node_ip(id as usize - 1) };

    // 1. Cut the leader off, and have it append an entry nobody else gets.
    // The previous fault may have left an election under way.
    let leader = leader_among(nemesis, nodes, STEP_TIMEOUT, "a leader to start from").await?;
    let (x, term) = (leader.id, leader.term);
    let others: Vec<u64> = ids.iter().copied().filter(|&id| id != x).collect();
    let cut: Vec<(Ipv4Addr, Ipv4Addr)> = others
        .iter()
        .flat_map(|&o| [(ip(x), ip(o)), (ip(o), ip(x))])
        .collect();
    firewall.drop_links(&cut)?;
    append_uncommittable(
        addr(x),
        MARKER_KEY,
        format!("appended by the leader of term {term} while cut off"),
    );

    // 2. The follower with the longer log is the late candidate; its ticks stop while it
    //    still counts the old leader's lease, so it refuses the voter's pre-votes.
    let (first, second) = (
        status(nemesis, addr(others[0])).await?,
        status(nemesis, addr(others[1])).await?,
    );
    let (y, b) = if first.last_index >= second.last_index {
        (others[0], others[1])
    } else {
        (others[1], others[0])
    };
    freeze(nemesis, y, addr(y)).await?;

    // 3. Wait for the old leader to step down, holding the longer log: then the voter,
    //    refused by both, cannot win an election itself.
    let voter_last = status(nemesis, addr(b)).await?.last_index;
    wait_for(
        STEP_TIMEOUT,
        "the cut-off leader to append the write and step down",
        || async {
            let s = status(nemesis, addr(x)).await.ok()?;
            (s.role != "leader" && s.last_index > voter_last).then_some(())
        },
    )
    .await?;
    let late = status(nemesis, addr(y)).await?;
    anyhow::ensure!(
        late.term == term && late.last_index >= voter_last,
        "n{y} moved while the leader was cut off (term {}, last index {}); the late \
         candidate needs term {term} and a log at least as long as the voter's ({voter_last})",
        late.term,
        late.last_index,
    );

    // 4. Restart the voter, so that nothing the old leader sent before the cut is still
    //    on its way to it, then reopen the old leader's way to it, slowed. The old
    //    leader wins the next term with the voter's vote.
    restart(nemesis, b, addr(b)).await?;
    let delay = LinkDelay::start(QUEUE_NUM, LINK_DELAY)?;
    *nemesis.link_delay.lock().expect("link delay lock") = Some(delay);
    firewall.delay_link(ip(x), ip(b), QUEUE_NUM)?;
    firewall.undrop_links(&[(ip(x), ip(b)), (ip(b), ip(x))])?;
    let new_term = wait_for(
        STEP_TIMEOUT,
        "the old leader to win the next term",
        || async {
            let s = status(nemesis, addr(x)).await.ok()?;
            (s.role == "leader" && s.term > term).then_some(s.term)
        },
    )
    .await?;

    // 5. Before the new leader's first append reaches the voter, the voter restarts. The
    //    new leader's ticks stop meanwhile: its connection to the voter takes a while to
    //    come back over the slowed link, and its check-quorum must not count that time.
    nemesis.cluster.lock().await.kill(b)?;
    freeze(nemesis, x, addr(x)).await?;
    restart(nemesis, b, addr(b)).await?;

    // 6. The late candidate times out at once and asks the restarted voter.
    set_clock_offset(addr(y), CAMPAIGN_MS).await?;
    let second_leader = wait_for(WATCH, "", || async {
        let s = status(nemesis, addr(y)).await.ok()?;
        (s.role == "leader" && s.term == new_term).then_some(())
    })
    .await
    .is_ok();
    thaw(nemesis, x, addr(x)).await?;
    let outcome = if second_leader {
        format!("n{y} leads term {new_term} too: TWO LEADERS IN ONE TERM")
    } else {
        format!("n{y} did not win it")
    };
    Ok((
        format!(
            "n{x} won term {new_term} with n{b}'s vote over a link slowed to {} ms; n{b} \
             restarted before n{x}'s first append reached it; n{y}, still in term {term}, \
             then asked n{b} for a vote in term {new_term}: {outcome}",
            LINK_DELAY.as_millis()
        ),
        second_leader,
    ))
}

/// SIGKILL (if still running), start again, and wait until it answers. A restarted node's
/// clock is real time.
async fn restart(nemesis: &Nemesis, id: u64, addr: SocketAddr) -> anyhow::Result<()> {
    {
        let mut cluster = nemesis.cluster.lock().await;
        cluster.kill(id)?;
        cluster.start(id)?;
    }
    forget_clock(nemesis, id);
    wait_for(STEP_TIMEOUT, "the restarted node to serve", || async {
        status(nemesis, addr).await.ok().map(drop)
    })
    .await
}

/// Steps the node's clock back far enough that it stops ticking until stepped again.
async fn freeze(nemesis: &Nemesis, id: u64, addr: SocketAddr) -> anyhow::Result<()> {
    set_clock_offset(addr, FREEZE_MS).await?;
    nemesis.clock_stepped.lock().expect("clock lock").push(id);
    Ok(())
}

/// Undoes [`freeze`]: the node ticks on from where it stopped.
async fn thaw(nemesis: &Nemesis, id: u64, addr: SocketAddr) -> anyhow::Result<()> {
    set_clock_offset(addr, 0).await?;
    forget_clock(nemesis, id);
    Ok(())
}

/// The node's clock keeps real time again: nothing to step back when the fault ends.
fn forget_clock(nemesis: &Nemesis, id: u64) {
    nemesis
        .clock_stepped
        .lock()
        .expect("clock lock")
        .retain(|&stepped| stepped != id);
}
