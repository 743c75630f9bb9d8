//! The hashing threads' jobs, each handed to the thread that went idle last.
//!
//! A channel wakes its waiting receivers in turn (crossbeam's, the one that
//! has waited longest), so a trickle of logins, one every few seconds,
//! visits every thread, and each keeps its Argon2 memory (19 MiB by
//! default) because none stays idle long enough to give it back. Here the
//! idle threads form a stack: a job goes to the thread on top, the one that
//! finished last, and the others stay idle and free their memory. Jobs
//! queue, first in first out and up to a bound, only while every thread is
//! busy.
//!
//! A thread registers as idle before it answers its job's caller
//! ([`Handoff::finish`]), so a caller that sends its next job on the answer
//! finds that same thread on top.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Why a job was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Every thread is busy and the queue is full.
    Full,
    /// The pool has stopped.
    Closed,
}

/// Jobs for a fixed set of threads, numbered from 0.
pub(super) struct Handoff<T> {
    state: Mutex<State<T>>,
    /// One per thread: the thread waits on its own, so that a job wakes
    /// exactly the thread it was handed to.
    wakers: Vec<Condvar>,
    /// Most jobs waiting in the queue.
    capacity: usize,
}

struct State<T> {
    /// Jobs no thread was free for, oldest first.
    queue: VecDeque<T>,
    /// Idle threads; the last went idle last.
    idle: Vec<usize>,
    /// Per thread: the job handed to it while idle, not yet taken.
    handed: Vec<Option<T>>,
    closed: bool,
}

impl<T> Handoff<T> {
    /// For `threads` threads, all idle (a job handed to one that has not
    /// started yet waits for it), and a queue of at most `capacity` jobs.
    pub(super) fn new(threads: usize, capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                idle: (0..threads).collect(),
                handed: (0..threads).map(|_| None).collect(),
                closed: false,
            }),
            wakers: (0..threads).map(|_| Condvar::new()).collect(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a job to the thread that went idle last, or queues it while
    /// every thread is busy.
    pub(super) fn offer(&self, job: T) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if let Some(thread) = state.idle.pop() {
            state.handed[thread] = Some(job);
            drop(state);
            self.wakers[thread].notify_one();
            return Ok(());
        }
        if state.queue.len() >= self.capacity {
            return Err(Refused::Full);
        }
        state.queue.push_back(job);
        Ok(())
    }

    /// Said by `thread` when it is done with a job, before it answers: the
    /// oldest queued job, for it to run next, or `None`, and the thread is
    /// idle from now on, first in line for the next job.
    pub(super) fn finish(&self, thread: usize) -> Option<T> {
        let mut state = self.lock();
        if let Some(job) = state.queue.pop_front() {
            return Some(job);
        }
        if !state.idle.contains(&thread) && state.handed[thread].is_none() {
            state.idle.push(thread);
        }
        None
    }

    /// Waits, as an idle `thread`, for the job handed to it; `idle` runs
    /// (without the lock held) each time `idle_for` passes without one.
    /// `None` once the pool has stopped.
    pub(super) fn wait(
        &self,
        thread: usize,
        idle_for: Duration,
        mut idle: impl FnMut(),
    ) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.handed[thread].take() {
                return Some(job);
            }
            if state.closed {
                state.idle.retain(|&other| other != thread);
                return None;
            }
            if !state.idle.contains(&thread) {
                // Not said idle (a caller's mistake): take from the queue
                // as `finish` would.
                if let Some(job) = state.queue.pop_front() {
                    return Some(job);
                }
                state.idle.push(thread);
            }
            let (woken, timeout) = self.wakers[thread]
                .wait_timeout(state, idle_for)
                .unwrap_or_else(PoisonError::into_inner);
            state = woken;
            if timeout.timed_out() && state.handed[thread].is_none() && !state.closed {
                drop(state);
                idle();
                state = self.lock();
            }
        }
    }

    /// Stops the pool: no job is taken from now on, and idle threads are
    /// woken to end. Jobs already handed or queued are still run.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        for waker in &self.wakers {
            waker.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `thread` takes now; it must not have to wait.
    fn taken<T>(handoff: &Handoff<T>, thread: usize) -> Option<T> {
        handoff.wait(thread, Duration::ZERO, || {
            panic!("nothing for thread {thread}")
        })
    }

    #[test]
    fn a_job_goes_to_the_thread_that_went_idle_last() {
        let handoff = Handoff::new(3, 2);
        handoff.offer("a").unwrap();
        assert_eq!(taken(&handoff, 2), Some("a"));
        // Thread 2 again, once it is done: the others stay idle.
        assert_eq!(handoff.finish(2), None);
        handoff.offer("b").unwrap();
        assert_eq!(taken(&handoff, 2), Some("b"));
        // While 2 is busy, 1 is next, then 0; then jobs queue, up to 2.
        handoff.offer("c").unwrap();
        handoff.offer("d").unwrap();
        handoff.offer("e").unwrap();
        handoff.offer("f").unwrap();
        assert_eq!(handoff.offer("g"), Err(Refused::Full));
        assert_eq!(taken(&handoff, 1), Some("c"));
        assert_eq!(taken(&handoff, 0), Some("d"));
        // A thread done while jobs queue takes the oldest, without idling.
        assert_eq!(handoff.finish(1), Some("e"));
        assert_eq!(handoff.finish(0), Some("f"));
        assert_eq!(handoff.finish(2), None);
        handoff.close();
        assert_eq!(handoff.offer("h"), Err(Refused::Closed));
        assert_eq!(taken(&handoff, 2), None);
    }

    #[test]
    fn an_idle_thread_is_told_each_time_it_has_waited_long_enough() {
        let handoff = std::sync::Arc::new(Handoff::<u32>::new(1, 1));
        let waiting = std::thread::spawn({
            let handoff = std::sync::Arc::clone(&handoff);
            move || {
                let mut idled = 0;
                let job = handoff.wait(0, Duration::from_millis(20), || idled += 1);
                (job, idled)
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        handoff.offer(7).unwrap();
        let (job, idled) = waiting.join().unwrap();
        assert_eq!(job, Some(7));
        assert!(idled >= 2, "{idled}");
        // Stopping wakes an idle thread, which ends.
        assert_eq!(handoff.finish(0), None);
        let waiting = std::thread::spawn({
            let handoff = std::sync::Arc::clone(&handoff);
            move || handoff.wait(0, Duration::from_secs(60), || ())
        });
        std::thread::sleep(Duration::from_millis(50));
        handoff.close();
        assert_eq!(waiting.join().unwrap(), None);
    }
}
