//! Single-flight: of many concurrent misses on one key, one (the leader) runs the handler and
//! the others wait for its result.
//!
//! What must stay true: a waiter is released the moment the leader finishes, fails, panics or is
//! cancelled, because the leader's [`Leader`] guard publishes or drops the channel in every case.
//! A leader says how it ended ([`Ended`]): with a value to share, with a value it could not
//! store (for the waiters that joined before its fill began only), by stepping down (its own
//! request could not produce a shareable answer, so the waiters elect another leader), or by
//! giving up (dropped: the waiters run the handler themselves, since another leader would fare
//! no better).

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::watch;

/// The flights in progress, by key hash.
///
/// ```
/// use cache_core::flight::{Ended, Flights, Join};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let flights: Flights<&'static str> = Flights::default();
/// let Join::Leader(leader) = flights.join(7) else { unreachable!() };
/// let Join::Waiter(mut waiter) = flights.join(7) else { unreachable!() };
/// leader.complete("filled");
/// assert_eq!(waiter.wait().await, Ended::Done("filled"));
/// # });
/// ```
#[derive(Debug)]
pub struct Flights<T> {
    map: Arc<DashMap<u128, watch::Receiver<State<T>>>>,
}

/// Where a flight stands, as its channel carries it.
#[derive(Debug, Clone)]
enum State<T> {
    Running,
    Done(T),
    Unstored(T, Instant),
    SteppedDown,
}

/// How a flight ended, as a waiter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended<T> {
    /// The leader shared this value.
    Done(T),
    /// The leader's value, which the store refused (an invalidation or a newer fill while it
    /// ran, or a node out of touch with the shared clocks): only for a waiter that joined
    /// before `since`, the instant the leader's fill began (it took its clock reading), which
    /// no later invalidation can concern. Any other waiter runs the handler itself.
    Unstored {
        /// The leader's value.
        value: T,
        /// When the leader's fill began.
        since: Instant,
    },
    /// The leader's own request could not give a shareable answer (a HEAD, say): elect another.
    SteppedDown,
    /// The leader failed, panicked, was cancelled, or its answer could not be shared with
    /// anyone: run the handler yourself.
    GaveUp,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            map: Arc::new(DashMap::new()),
        }
    }
}

/// The outcome of joining a flight.
#[derive(Debug)]
pub enum Join<T> {
    /// Run the handler, then call [`Leader::complete`] (or drop the guard to release waiters empty-handed).
    Leader(Leader<T>),
    /// Wait for the leader.
    Waiter(Waiter<T>),
}

impl<T: Clone> Flights<T> {
    /// Becomes the leader for `key`, or a waiter if a leader is already running.
    pub fn join(&self, key: u128) -> Join<T> {
        match self.map.entry(key) {
            dashmap::Entry::Occupied(slot) => Join::Waiter(Waiter {
                rx: slot.get().clone(),
            }),
            dashmap::Entry::Vacant(slot) => {
                let (tx, rx) = watch::channel(State::Running);
                slot.insert(rx);
                Join::Leader(Leader {
                    map: self.map.clone(),
                    key,
                    tx: Some(tx),
                })
            }
        }
    }

    /// Becomes the leader only if nobody leads `key` (used to refresh a stale entry once).
    pub fn try_lead(&self, key: u128) -> Option<Leader<T>> {
        match self.join(key) {
            Join::Leader(leader) => Some(leader),
            Join::Waiter(_) => None,
        }
    }

    /// Takes the lead of `key` from a leader that `waiter` gave up waiting for (a lock
    /// timeout): the first waiter to ask becomes the new leader, and later ones wait for it
    /// instead of all running the handler at once. `None` when another waiter already took
    /// over, or the flight ended; the caller then joins again.
    ///
    /// ```
    /// use cache_core::flight::{Flights, Join};
    /// let flights: Flights<u8> = Flights::default();
    /// let Join::Leader(_slow) = flights.join(1) else { unreachable!() };
    /// let Join::Waiter(first) = flights.join(1) else { unreachable!() };
    /// let Join::Waiter(second) = flights.join(1) else { unreachable!() };
    /// assert!(flights.take_over(1, &first).is_some());
    /// assert!(flights.take_over(1, &second).is_none(), "one new leader, not two");
    /// ```
    pub fn take_over(&self, key: u128, waiter: &Waiter<T>) -> Option<Leader<T>> {
        match self.map.entry(key) {
            dashmap::Entry::Occupied(mut slot) if slot.get().same_channel(&waiter.rx) => {
                let (tx, rx) = watch::channel(State::Running);
                slot.insert(rx);
                Some(Leader {
                    map: self.map.clone(),
                    key,
                    tx: Some(tx),
                })
            }
            _ => None,
        }
    }

    /// Whether a leader is running for `key`.
    pub fn in_flight(&self, key: u128) -> bool {
        self.map.contains_key(&key)
    }

    /// Number of flights in progress.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no flight is in progress.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The leader's guard. Dropping it without [`Leader::complete`] releases the waiters with nothing.
#[derive(Debug)]
pub struct Leader<T> {
    map: Arc<DashMap<u128, watch::Receiver<State<T>>>>,
    key: u128,
    tx: Option<watch::Sender<State<T>>>,
}

impl<T> Leader<T> {
    /// Hands `value` to every waiter.
    pub fn complete(self, value: T) {
        self.end(State::Done(value));
    }

    /// Hands `value`, which could not be stored, to the waiters that joined before `since`
    /// (when this leader's fill began); the others are released to run the handler.
    ///
    /// ```
    /// use std::time::Instant;
    /// use cache_core::flight::{Ended, Flights, Join};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let flights: Flights<u8> = Flights::default();
    /// let Join::Leader(leader) = flights.join(1) else { unreachable!() };
    /// let Join::Waiter(mut early) = flights.join(1) else { unreachable!() };
    /// let since = Instant::now();
    /// leader.complete_unstored(5, since);
    /// assert_eq!(early.wait().await, Ended::Unstored { value: 5, since });
    /// # });
    /// ```
    pub fn complete_unstored(self, value: T, since: Instant) {
        self.end(State::Unstored(value, since));
    }

    /// Ends the flight without a value because this leader's own request could not produce a
    /// shareable one: the waiters elect a new leader instead of all running the handler.
    pub fn step_down(self) {
        self.end(State::SteppedDown);
    }

    fn end(mut self, state: State<T>) {
        if let Some(tx) = self.tx.take() {
            // Only our own flight: after a take-over the key names the new leader's.
            self.map
                .remove_if(&self.key, |_, rx| rx.same_channel(&tx.subscribe()));
            tx.send_replace(state);
        }
    }
}

impl<T> Drop for Leader<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.map
                .remove_if(&self.key, |_, rx| rx.same_channel(&tx.subscribe()));
        }
    }
}

/// A waiter on someone else's flight.
#[derive(Debug)]
pub struct Waiter<T> {
    rx: watch::Receiver<State<T>>,
}

impl<T: Clone> Waiter<T> {
    /// How the leader ended. Cancel-safe: a caller may stop waiting (a timeout) and then
    /// [`Flights::take_over`], or wait again.
    pub async fn wait(&mut self) -> Ended<T> {
        loop {
            match &*self.rx.borrow_and_update() {
                State::Running => {}
                ended => return ended.ended(),
            }
            if self.rx.changed().await.is_err() {
                // The sender is gone: either it published just before, or it was dropped.
                return self.rx.borrow().ended();
            }
        }
    }

    /// The leader's value if it shares one; never resolves otherwise (for waiting on a
    /// superseded leader beside the current one).
    pub async fn value(&mut self) -> T {
        match self.wait().await {
            Ended::Done(value) => value,
            Ended::Unstored { .. } | Ended::SteppedDown | Ended::GaveUp => {
                std::future::pending().await
            }
        }
    }
}

impl<T: Clone> State<T> {
    /// How a flight in this state ended, as its waiters see it (a flight whose leader is gone
    /// while still running gave up).
    fn ended(&self) -> Ended<T> {
        match self {
            State::Done(value) => Ended::Done(value.clone()),
            State::Unstored(value, since) => Ended::Unstored {
                value: value.clone(),
                since: *since,
            },
            State::SteppedDown => Ended::SteppedDown,
            State::Running => Ended::GaveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_leader_that_is_taken_over_does_not_end_the_new_flight() {
        let flights: Flights<u32> = Flights::default();
        let Join::Leader(slow) = flights.join(1) else {
            panic!("expected leader")
        };
        let Join::Waiter(waiter) = flights.join(1) else {
            panic!("expected waiter")
        };
        let Some(new) = flights.take_over(1, &waiter) else {
            panic!("expected to take over")
        };
        slow.complete(1);
        let Join::Waiter(mut late) = flights.join(1) else {
            panic!("the new leader's flight must still stand")
        };
        new.complete(2);
        assert_eq!(late.wait().await, Ended::Done(2));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_leader_that_steps_down_asks_for_an_election() {
        let flights: Flights<u32> = Flights::default();
        let Join::Leader(head) = flights.join(1) else {
            panic!("expected leader")
        };
        let Join::Waiter(mut waiter) = flights.join(1) else {
            panic!("expected waiter")
        };
        head.step_down();
        assert_eq!(waiter.wait().await, Ended::SteppedDown);
        assert!(
            matches!(flights.join(1), Join::Leader(_)),
            "the flight is free to lead"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters_empty_handed() {
        let flights: Flights<u32> = Flights::default();
        let Join::Leader(leader) = flights.join(1) else {
            panic!("expected leader")
        };
        let Join::Waiter(mut waiter) = flights.join(1) else {
            panic!("expected waiter")
        };
        let waiting = tokio::spawn(async move { waiter.wait().await });
        drop(leader);
        assert_eq!(waiting.await.ok(), Some(Ended::GaveUp));
        assert!(flights.is_empty());
        assert!(matches!(flights.join(1), Join::Leader(_)));
    }
}
