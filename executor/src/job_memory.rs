//! A job's memory on this executor: the tasks of one query share a cap
//! (`max_query_memory_bytes`, the user's or the server's) within the executor's own pool.
//! Past the cap an operator that can spill spills; one that cannot fails with an error
//! naming the limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use parking_lot::Mutex;

/// Holds one job's reservations to `limit` bytes, passing each on to the executor's pool.
#[derive(Debug)]
pub(crate) struct JobMemoryPool {
    inner: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl std::fmt::Display for JobMemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job memory ({} of {} bytes)",
            self.reserved(),
            self.limit
        )
    }
}

impl MemoryPool for JobMemoryPool {
    fn name(&self) -> &str {
        "quiver job memory"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let claimed = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let wanted = used.checked_add(additional)?;
                (wanted <= self.limit).then_some(wanted)
            });
        if let Err(used) = claimed {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{} wants {additional} more bytes, but this query's tasks hold {used} of the \
                 {} bytes a query may hold on one executor (max_query_memory_bytes: `ALTER \
                 USER/ROLE ... SET max_query_memory_bytes`, or `quiver scheduler \
                 --max-query-memory-bytes`)",
                reservation.consumer().name(),
                self.limit
            )));
        }
        if let Err(error) = self.inner.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(error);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// The pools of the jobs with tasks on this executor, shared by their tasks and gone with
/// the last of them.
#[derive(Debug, Default)]
pub(crate) struct JobMemoryPools {
    pools: Mutex<HashMap<String, Weak<JobMemoryPool>>>,
}

impl JobMemoryPools {
    /// Job `job_id`'s pool, capped at `limit` bytes within `inner`.
    pub(crate) fn pool_of(
        &self,
        job_id: &str,
        limit: usize,
        inner: &Arc<dyn MemoryPool>,
    ) -> Arc<JobMemoryPool> {
        let mut pools = self.pools.lock();
        if let Some(pool) = pools.get(job_id).and_then(Weak::upgrade) {
            return pool;
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let pool = Arc::new(JobMemoryPool {
            inner: Arc::clone(inner),
            limit,
            used: AtomicUsize::new(0),
        });
        pools.insert(job_id.to_string(), Arc::downgrade(&pool));
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::UnboundedMemoryPool;

    #[test]
    fn a_jobs_tasks_share_one_cap_and_free_it() {
        let executor: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        let pools = JobMemoryPools::default();
        let first: Arc<dyn MemoryPool> = pools.pool_of("job-1", 100, &executor);
        let second: Arc<dyn MemoryPool> = pools.pool_of("job-1", 100, &executor);
        let other: Arc<dyn MemoryPool> = pools.pool_of("job-2", 100, &executor);
        let a = MemoryConsumer::new("sort").register(&first);
        let b = MemoryConsumer::new("join").register(&second);
        a.try_grow(60).unwrap();
        let refused = b.try_grow(60).unwrap_err().to_string();
        assert!(refused.contains("max_query_memory_bytes"), "{refused}");
        MemoryConsumer::new("another job")
            .register(&other)
            .try_grow(60)
            .expect("each job has its own cap");
        drop(a);
        b.try_grow(60).expect("freed memory is free again");
        assert_eq!(executor.reserved(), 60);
    }
}
