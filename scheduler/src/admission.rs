//! Admission: how many statements each user runs at once (`--max-running-per-user`, or
//! the user's or a role's `max_running_statements`) and how many more may wait in line
//! (`--max-queued-per-user`, `max_queued_statements`). A statement over the first
//! limit waits, first come first served within its user, and reports its place in line;
//! one over the second is refused at once. Users without logins are told apart by
//! session.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use quiver_core::{JobId, QuiverError};
use tokio::sync::oneshot;

/// What one user may run; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Statements running at once.
    pub max_running: u64,
    /// Statements waiting in line.
    pub max_queued: u64,
    /// Seconds a statement may take, its time in line included.
    pub statement_timeout_secs: u64,
    /// Bytes of memory one query's tasks may hold on each executor.
    pub max_query_memory_bytes: u64,
}

#[derive(Default)]
struct UserLine {
    running: usize,
    /// Waiting statements, first in line first; each is woken with its slot.
    waiting: VecDeque<(JobId, oneshot::Sender<()>)>,
}

/// Every user's running count and line.
#[derive(Default)]
pub struct Admission {
    users: Mutex<HashMap<String, UserLine>>,
}

/// A running slot of a user's: given back when dropped, to the next in line.
pub struct Admitted {
    admission: Arc<Admission>,
    user: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(&self.user);
    }
}

impl Admission {
    /// A running slot for `user`'s statement `job_id`: at once while the user runs fewer
    /// than the limit, else after waiting in line. Refused when the line is full.
    /// Dropping the returned future leaves the line.
    pub async fn admit(
        self: &Arc<Self>,
        user: &str,
        job_id: &JobId,
        limits: &UserLimits,
    ) -> Result<Admitted, QuiverError> {
        let admitted = || Admitted {
            admission: Arc::clone(self),
            user: user.to_string(),
        };
        let woken = {
            let mut users = self.users.lock();
            let line = users.entry(user.to_string()).or_default();
            if limits.max_running == 0 || (line.running as u64) < limits.max_running {
                line.running += 1;
                return Ok(admitted());
            }
            if limits.max_queued > 0 && line.waiting.len() as u64 >= limits.max_queued {
                return Err(QuiverError::QueueFull {
                    user: user.to_string(),
                    running: line.running,
                    queued: line.waiting.len(),
                });
            }
            let (wake, woken) = oneshot::channel();
            line.waiting.push_back((job_id.clone(), wake));
            woken
        };
        let leave_line = LeaveLine {
            admission: self,
            user,
            job_id,
        };
        // The slot is handed over by `release` (running already counts it).
        let _ = woken.await;
        std::mem::forget(leave_line);
        Ok(admitted())
    }

    /// Statements waiting in every user's line.
    pub fn waiting(&self) -> usize {
        self.users
            .lock()
            .values()
            .map(|line| line.waiting.len())
            .sum()
    }

    /// `job_id`'s place in its user's line (1 is next), if it waits.
    pub fn position(&self, job_id: &JobId) -> Option<usize> {
        let users = self.users.lock();
        users.values().find_map(|line| {
            line.waiting
                .iter()
                .position(|(waiting, _)| waiting == job_id)
                .map(|index| index + 1)
        })
    }

    /// Hands `user`'s freed slot to the next in line whose statement still waits.
    fn release(&self, user: &str) {
        let mut users = self.users.lock();
        let Some(line) = users.get_mut(user) else {
            return;
        };
        loop {
            match line.waiting.pop_front() {
                Some((_, wake)) => {
                    if wake.send(()).is_ok() {
                        return; // the slot passes on; running stays the same
                    }
                }
                None => {
                    line.running = line.running.saturating_sub(1);
                    if line.running == 0 {
                        users.remove(user);
                    }
                    return;
                }
            }
        }
    }
}

/// Takes a statement out of the line when its wait is abandoned (the client went away,
/// or the statement timed out); a slot handed to it meanwhile is passed on.
struct LeaveLine<'a> {
    admission: &'a Arc<Admission>,
    user: &'a str,
    job_id: &'a JobId,
}

impl Drop for LeaveLine<'_> {
    fn drop(&mut self) {
        let mut users = self.admission.users.lock();
        let Some(line) = users.get_mut(self.user) else {
            return;
        };
        let before = line.waiting.len();
        line.waiting.retain(|(waiting, _)| waiting != self.job_id);
        let still_waited = line.waiting.len() < before;
        drop(users);
        if !still_waited {
            // `release` handed this statement a slot it will never use.
            self.admission.release(self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn over_the_limit_waits_in_line_and_over_the_line_is_refused() {
        let admission = Arc::new(Admission::default());
        let limits = UserLimits {
            max_running: 1,
            max_queued: 1,
            ..UserLimits::default()
        };
        let (first, second, third) = (
            JobId::new_random(),
            JobId::new_random(),
            JobId::new_random(),
        );
        let running = admission.admit("alice", &first, &limits).await.unwrap();
        let waiting = {
            let admission = Arc::clone(&admission);
            let second = second.clone();
            tokio::spawn(
                async move { admission.admit("alice", &second, &limits).await.map(|_| ()) },
            )
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(admission.position(&second), Some(1));
        let refused = admission
            .admit("alice", &third, &limits)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(refused, QuiverError::QueueFull { .. }),
            "{refused}"
        );
        // Another user is not held up.
        let _bob = admission.admit("bob", &third, &limits).await.unwrap();
        drop(running);
        waiting.await.unwrap().unwrap();
        assert_eq!(admission.position(&second), None);
    }

    #[tokio::test]
    async fn an_abandoned_wait_leaves_the_line_and_frees_nothing_twice() {
        let admission = Arc::new(Admission::default());
        let limits = UserLimits {
            max_running: 1,
            max_queued: 10,
            ..UserLimits::default()
        };
        let (first, second, third) = (
            JobId::new_random(),
            JobId::new_random(),
            JobId::new_random(),
        );
        let running = admission.admit("alice", &first, &limits).await.unwrap();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            admission.admit("alice", &second, &limits),
        )
        .await;
        assert!(abandoned.is_err());
        assert_eq!(admission.position(&second), None);
        drop(running);
        // The slot is free again: the next statement runs at once.
        let next = tokio::time::timeout(
            Duration::from_millis(500),
            admission.admit("alice", &third, &limits),
        )
        .await
        .expect("admitted at once");
        assert!(next.is_ok());
    }
}
