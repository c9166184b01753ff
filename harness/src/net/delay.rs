//! Slow links: packets held back for a fixed delay, then delivered in order.
//!
//! iptables hands the packets of a slowed link to this process through NFQUEUE
//! ([`Firewall::delay_link`](super::firewall::Firewall::delay_link)); a thread
//! holds each one for the delay and then gives it back to the kernel. tc's
//! netem does the same inside the kernel, but kernels are often built without
//! it (this project's CI machines are); NFQUEUE comes with netfilter.
//!
//! The rule carries `--queue-bypass`, so a link whose [`LinkDelay`] has
//! stopped passes packets instead of dropping them.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::namespace::NetError;

/// How often the thread looks for new and due packets: the delay's resolution.
const POLL: Duration = Duration::from_millis(1);
/// Packets the kernel queues for us before it drops (or, with fail-open, passes) more.
const QUEUE_MAX_LEN: u32 = 65_536;

/// Holds the packets of NFQUEUE queue `queue_num` for `delay` each, until stopped.
#[derive(Debug)]
pub struct LinkDelay {
    queue_num: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, String>>>,
}

impl LinkDelay {
    /// Binds the queue (so that errors show here, not in the thread) and starts holding.
    pub fn start(queue_num: u16, delay: Duration) -> Result<LinkDelay, NetError> {
        let nfqueue =
            |step: &'static str| move |source: std::io::Error| NetError::Nfqueue { step, source };
        let mut queue = nfq::Queue::open().map_err(nfqueue("open a netlink socket"))?;
        queue.bind(queue_num).map_err(nfqueue("bind the queue"))?;
        // A full queue passes packets rather than dropping them: a slow link is not a
        // lossy one.
        queue
            .set_fail_open(queue_num, true)
            .map_err(nfqueue("set fail-open"))?;
        queue
            .set_queue_max_len(queue_num, QUEUE_MAX_LEN)
            .map_err(nfqueue("set the queue length"))?;
        queue.set_nonblocking(true);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("link-delay-{queue_num}"))
                .spawn(move || hold(queue, queue_num, delay, &stop))
                .map_err(nfqueue("start the thread"))?
        };
        Ok(LinkDelay {
            queue_num,
            stop,
            thread: Some(thread),
        })
    }

    /// Delivers every packet still held, unbinds the queue and returns how many packets
    /// were delayed in all.
    pub fn stop(mut self) -> Result<u64, NetError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<u64, NetError> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(0);
        };
        let outcome = thread
            .join()
            .unwrap_or_else(|_| Err("the thread panicked".to_string()));
        outcome.map_err(|reason| NetError::NfqueueStopped {
            queue: self.queue_num,
            reason,
        })
    }
}

impl Drop for LinkDelay {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn hold(
    mut queue: nfq::Queue,
    queue_num: u16,
    delay: Duration,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut delayed = 0u64;
    let release = |queue: &mut nfq::Queue, mut message: nfq::Message| {
        message.set_verdict(nfq::Verdict::Accept);
        queue
            .verdict(message)
            .map_err(|e| format!("verdict failed: {e}"))
    };
    let outcome = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let received = loop {
            match queue.recv() {
                Ok(message) => {
                    held.push_back((Instant::now() + delay, message));
                    delayed += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(format!("receiving failed: {e}")),
            }
        };
        if let Err(reason) = received {
            break Err(reason);
        }
        let now = Instant::now();
        let mut released = Ok(());
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, message) = held.pop_front().expect("front exists");
            if let Err(reason) = release(&mut queue, message) {
                released = Err(reason);
                break;
            }
        }
        if let Err(reason) = released {
            break Err(reason);
        }
        std::thread::sleep(POLL);
    };
    // Whatever happened, nothing stays held: the kernel would keep those packets queued
    // until the socket closes.
    for (_, message) in held.drain(..) {
        let _ = release(&mut queue, message);
    }
    let _ = queue.unbind(queue_num);
    outcome.map(|()| delayed)
}
