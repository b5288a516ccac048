//! A stage's tasks, with what the scheduler asks of them on every event kept current:
//! how many wait to start, whether all have succeeded, and where the first waiting one
//! is. Asking costs nothing however wide the stage is.

use std::ops::Deref;

use crate::job::TaskState;

#[derive(Debug, Clone)]
pub(crate) struct StageTasks {
    states: Vec<TaskState>,
    pending: usize,
    succeeded: usize,
    /// No task before this one is pending.
    pending_from: usize,
}

impl StageTasks {
    /// `count` tasks, none started.
    pub(crate) fn pending(count: usize) -> Self {
        Self {
            states: vec![TaskState::Pending; count],
            pending: count,
            succeeded: 0,
            pending_from: 0,
        }
    }

    /// Moves task `partition` to `state`.
    pub(crate) fn set(&mut self, partition: usize, state: TaskState) {
        let task = &mut self.states[partition];
        match task {
            TaskState::Pending => self.pending -= 1,
            TaskState::Succeeded { .. } => self.succeeded -= 1,
            TaskState::Running { .. } => {}
        }
        match &state {
            TaskState::Pending => {
                self.pending += 1;
                self.pending_from = self.pending_from.min(partition);
            }
            TaskState::Succeeded { .. } => self.succeeded += 1,
            TaskState::Running { .. } => {}
        }
        *task = state;
    }

    /// Whether some task waits to start.
    pub(crate) fn any_pending(&self) -> bool {
        self.pending > 0
    }

    /// Whether every task has succeeded.
    pub(crate) fn all_succeeded(&self) -> bool {
        self.succeeded == self.states.len()
    }

    /// The first pending task at or after `from`.
    pub(crate) fn next_pending(&mut self, from: usize) -> Option<usize> {
        if self.pending == 0 {
            return None;
        }
        while self
            .states
            .get(self.pending_from)
            .is_some_and(|task| !matches!(task, TaskState::Pending))
        {
            self.pending_from += 1;
        }
        (from.max(self.pending_from)..self.states.len())
            .find(|&partition| matches!(self.states[partition], TaskState::Pending))
    }
}

impl Deref for StageTasks {
    type Target = [TaskState];

    fn deref(&self) -> &[TaskState] {
        &self.states
    }
}

impl<'a> IntoIterator for &'a StageTasks {
    type Item = &'a TaskState;
    type IntoIter = std::slice::Iter<'a, TaskState>;

    fn into_iter(self) -> Self::IntoIter {
        self.states.iter()
    }
}

#[cfg(test)]
mod tests {
    use quiver_core::proto::{PartitionLocation, TaskMetrics};

    use super::*;

    fn running() -> TaskState {
        TaskState::Running {
            executor_id: "e".into(),
            attempt: 0,
        }
    }

    fn succeeded() -> TaskState {
        TaskState::Succeeded {
            location: PartitionLocation::default(),
            metrics: TaskMetrics::default(),
            attempt: 0,
        }
    }

    /// What the counts say must be what walking the tasks says.
    fn assert_consistent(tasks: &mut StageTasks) {
        let pending: Vec<usize> = (0..tasks.len())
            .filter(|&p| matches!(tasks[p], TaskState::Pending))
            .collect();
        assert_eq!(tasks.any_pending(), !pending.is_empty());
        assert_eq!(
            tasks.all_succeeded(),
            tasks
                .iter()
                .all(|t| matches!(t, TaskState::Succeeded { .. }))
        );
        for from in 0..=tasks.len() {
            let expected = pending.iter().copied().find(|&p| p >= from);
            assert_eq!(tasks.next_pending(from), expected, "from {from}");
        }
    }

    #[test]
    fn counts_and_the_first_pending_task_follow_every_move() {
        let mut tasks = StageTasks::pending(5);
        assert_consistent(&mut tasks);
        for partition in 0..5 {
            tasks.set(partition, running());
            assert_consistent(&mut tasks);
        }
        tasks.set(3, succeeded());
        tasks.set(0, succeeded());
        assert_consistent(&mut tasks);
        // A retry puts an early task back behind the cursor.
        tasks.set(1, TaskState::Pending);
        assert_consistent(&mut tasks);
        assert_eq!(tasks.next_pending(0), Some(1));
        // A lost output turns a success back into pending work.
        tasks.set(3, TaskState::Pending);
        assert_consistent(&mut tasks);
        assert_eq!(tasks.next_pending(2), Some(3));
        for partition in 0..5 {
            tasks.set(partition, succeeded());
        }
        assert_consistent(&mut tasks);
        assert!(tasks.all_succeeded());
        assert!(StageTasks::pending(0).all_succeeded());
    }
}
