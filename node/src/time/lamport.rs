//! Lamport clock (Lamport, "Time, Clocks, and the Ordering of Events in a Distributed
//! System", 1978): every message carries the sender's time; a receiver moves past it.
//! Replies to clients carry it too, so a client can order what different nodes told it.

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LamportClock {
    time: u64,
}

impl LamportClock {
    pub fn new(time: u64) -> Self {
        Self { time }
    }

    pub fn time(&self) -> u64 {
        self.time
    }

    /// A local event (sending a message): advances and returns the new time.
    pub fn tick(&mut self) -> u64 {
        self.time = self.time.saturating_add(1);
        self.time
    }

    /// Receiving a message stamped `remote`: the receive happens after the send.
    pub fn observe(&mut self, remote: u64) -> u64 {
        self.time = self.time.max(remote).saturating_add(1);
        self.time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_orders_after_send() {
        let mut a = LamportClock::default();
        let mut b = LamportClock::new(10);
        let sent = a.tick();
        assert_eq!(sent, 1);
        assert_eq!(b.observe(sent), 11, "b is ahead: it only moves by one");
        let reply = b.tick();
        assert_eq!(a.observe(reply), reply + 1, "a jumps past b's time");
    }
}
