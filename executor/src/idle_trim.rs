//! Giving freed memory back to the operating system once the executor goes idle.
//!
//! glibc's allocator keeps what a query's operators and shuffle buffers freed in its
//! arenas, so without this an idle executor stays resident near its peak. After tasks
//! have ended or held data has been dropped, the first heartbeat that finds no task
//! running asks glibc to return its free pages (`malloc_trim`). It runs on a blocking
//! thread, only while idle, at most once per heartbeat.

/// What the previous heartbeat saw.
#[derive(Debug, Default)]
pub(crate) struct IdleTrim {
    tasks_ended: u64,
    held_bytes: usize,
}

impl IdleTrim {
    /// Called on every heartbeat: whether memory was freed since the last call and
    /// nothing runs now, in which case the trim has been started.
    pub(crate) fn on_heartbeat(
        &mut self,
        running_tasks: usize,
        tasks_ended: u64,
        held_bytes: usize,
    ) -> bool {
        let freed = tasks_ended != self.tasks_ended || held_bytes < self.held_bytes;
        if running_tasks > 0 {
            // Ended tasks stay unaccounted until the executor is idle.
            self.held_bytes = self.held_bytes.max(held_bytes);
            return false;
        }
        self.tasks_ended = tasks_ended;
        self.held_bytes = held_bytes;
        if freed {
            tokio::task::spawn_blocking(return_free_memory);
        }
        freed
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own arenas; 0 keeps no extra pad.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trims_once_idle_after_work_and_not_again_until_more_work() {
        let mut trim = IdleTrim::default();
        assert!(!trim.on_heartbeat(0, 0, 0), "nothing has run yet");
        assert!(!trim.on_heartbeat(2, 0, 1000), "tasks are running");
        assert!(!trim.on_heartbeat(1, 1, 5000), "a task still runs");
        assert!(trim.on_heartbeat(0, 2, 5000), "idle after two tasks ended");
        assert!(!trim.on_heartbeat(0, 2, 5000), "nothing new was freed");
        assert!(
            trim.on_heartbeat(0, 2, 100),
            "a result was read and dropped"
        );
        assert!(!trim.on_heartbeat(0, 2, 100));
    }
}
