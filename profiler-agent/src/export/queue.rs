//! The export queue: bounded in bytes; when full, the **oldest** batch is dropped and counted, so
//! sampling never waits for a slow or absent collector and memory never grows past the bound.
//! Batches queued longer than [`MAX_BATCH_AGE`] are dropped too (counted apart): Pyroscope refuses
//! profiles older than an hour, so sending them after a long outage would only be rejected.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use tokio::sync::Notify;

/// One request waiting to be sent, encoded once when queued: the bound counts exactly what is
/// held, and a retry or a copy for the sender shares the bytes instead of copying a tree of
/// messages.
#[derive(Clone, Debug)]
pub struct Batch {
    pub id: u64,
    /// An `ExportProfilesServiceRequest`, protobuf-encoded.
    pub request: Bytes,
    /// `request.len()`, what the bound counts.
    pub bytes: usize,
    pub samples: u64,
    /// When it was queued (at the end of the window it holds).
    pub queued: Instant,
}

/// Age past which a queued batch is dropped instead of sent: Pyroscope rejects profiles older
/// than one hour (`reject-older-than`), and a batch holds up to a window of samples before it.
pub const MAX_BATCH_AGE: Duration = Duration::from_secs(55 * 60);

#[derive(Default)]
struct State {
    batches: VecDeque<Batch>,
    bytes: usize,
    next_id: u64,
}

/// What was dropped so far, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Dropped for space, or abandoned at shutdown.
    pub batches: u64,
    pub samples: u64,
    /// Dropped for age ([`MAX_BATCH_AGE`]).
    pub expired_batches: u64,
    pub expired_samples: u64,
}

pub struct ExportQueue {
    state: Mutex<State>,
    max_bytes: usize,
    max_age: Duration,
    notify: Notify,
    dropped_batches: AtomicU64,
    dropped_samples: AtomicU64,
    expired_batches: AtomicU64,
    expired_samples: AtomicU64,
}

impl ExportQueue {
    pub fn new(max_bytes: usize) -> Self {
        Self::with_max_age(max_bytes, MAX_BATCH_AGE)
    }

    /// A queue whose batches expire after `max_age` (tests use a short one).
    pub fn with_max_age(max_bytes: usize, max_age: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_bytes,
            max_age,
            notify: Notify::new(),
            dropped_batches: AtomicU64::new(0),
            dropped_samples: AtomicU64::new(0),
            expired_batches: AtomicU64::new(0),
            expired_samples: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data (every update is one push/pop).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an encoded request, dropping the oldest batches while the total would exceed the
    /// bound. A request larger than the whole bound is dropped itself.
    pub fn push(&self, request: Bytes, samples: u64) {
        let bytes = request.len();
        {
            let mut st = self.lock();
            if bytes > self.max_bytes {
                self.count_drop(samples);
                return;
            }
            while st.bytes + bytes > self.max_bytes {
                let Some(old) = st.batches.pop_front() else {
                    break;
                };
                st.bytes -= old.bytes;
                self.count_drop(old.samples);
            }
            let id = st.next_id;
            st.next_id += 1;
            st.bytes += bytes;
            st.batches.push_back(Batch {
                id,
                request,
                bytes,
                samples,
                queued: Instant::now(),
            });
        }
        self.notify.notify_one();
    }

    fn count_drop(&self, samples: u64) {
        self.dropped_batches.fetch_add(1, Ordering::Relaxed);
        self.dropped_samples.fetch_add(samples, Ordering::Relaxed);
    }

    /// The oldest batch (its bytes shared, not copied), left in the queue (and in the bound) until [`Self::remove`].
    /// Batches older than the queue's maximum age are dropped (and counted) first.
    pub fn front(&self) -> Option<Batch> {
        let mut st = self.lock();
        while st
            .batches
            .front()
            .is_some_and(|b| b.queued.elapsed() > self.max_age)
        {
            let old = st.batches.pop_front().expect("checked above");
            st.bytes -= old.bytes;
            self.expired_batches.fetch_add(1, Ordering::Relaxed);
            self.expired_samples
                .fetch_add(old.samples, Ordering::Relaxed);
        }
        st.batches.front().cloned()
    }

    /// Waits until a batch is queued.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if !self.lock().batches.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Removes a batch once sent (or given up on); a no-op if it was already dropped for space.
    pub fn remove(&self, id: u64) {
        let mut st = self.lock();
        if let Some(pos) = st.batches.iter().position(|b| b.id == id) {
            let b = st.batches.remove(pos).expect("position is in range");
            st.bytes -= b.bytes;
        }
    }

    /// Drops everything left (at shutdown, after the deadline), counting it.
    pub fn abandon(&self) -> Dropped {
        let mut st = self.lock();
        let mut gone = Dropped::default();
        for b in st.batches.drain(..) {
            gone.batches += 1;
            gone.samples += b.samples;
            self.count_drop(b.samples);
        }
        st.bytes = 0;
        gone
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dropped(&self) -> Dropped {
        Dropped {
            batches: self.dropped_batches.load(Ordering::Relaxed),
            samples: self.dropped_samples.load(Ordering::Relaxed),
            expired_batches: self.expired_batches.load(Ordering::Relaxed),
            expired_samples: self.expired_samples.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encoded request of `n` bytes.
    fn req(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn drops_oldest_batch_when_full() {
        let q = ExportQueue::new(100);
        q.push(req(40), 1);
        q.push(req(40), 2);
        q.push(req(40), 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 80);
        assert_eq!(
            q.dropped(),
            Dropped {
                batches: 1,
                samples: 1,
                ..Dropped::default()
            }
        );
        assert_eq!(q.front().unwrap().samples, 2, "the oldest went first");
    }

    #[test]
    fn a_batch_larger_than_the_bound_is_dropped_not_queued() {
        let q = ExportQueue::new(100);
        q.push(req(40), 1);
        q.push(req(101), 7);
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.dropped(),
            Dropped {
                batches: 1,
                samples: 7,
                ..Dropped::default()
            }
        );
    }

    #[test]
    fn batches_past_the_age_limit_are_dropped_and_counted_apart() {
        let q = ExportQueue::with_max_age(1000, Duration::from_millis(30));
        q.push(req(10), 4);
        std::thread::sleep(Duration::from_millis(60));
        q.push(req(10), 5);
        let front = q.front().expect("the young batch");
        assert_eq!(front.samples, 5);
        assert_eq!((q.len(), q.bytes()), (1, 10));
        let d = q.dropped();
        assert_eq!((d.expired_batches, d.expired_samples), (1, 4));
        assert_eq!((d.batches, d.samples), (0, 0), "not a drop for space");
        assert_eq!(MAX_BATCH_AGE, Duration::from_secs(3300));
    }

    #[test]
    fn front_stays_counted_until_removed() {
        let q = ExportQueue::new(100);
        q.push(req(60), 1);
        let b = q.front().unwrap();
        assert_eq!(q.bytes(), 60);
        // While it is being sent, a new batch evicts it: removing it later is a no-op.
        q.push(req(60), 2);
        assert_eq!(q.dropped().batches, 1);
        q.remove(b.id);
        assert_eq!(q.len(), 1);
        assert_eq!(q.bytes(), 60);
    }

    #[test]
    fn abandon_counts_what_is_left() {
        let q = ExportQueue::new(1000);
        q.push(req(10), 4);
        q.push(req(10), 5);
        assert_eq!(
            q.abandon(),
            Dropped {
                batches: 2,
                samples: 9,
                ..Dropped::default()
            }
        );
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[tokio::test]
    async fn wait_returns_once_something_is_queued() {
        let q = std::sync::Arc::new(ExportQueue::new(1000));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait().await });
        tokio::task::yield_now().await;
        q.push(req(10), 1);
        waiter.await.unwrap();
    }
}
