//! Placement policy: which job's tasks get free slots first.

use std::collections::HashMap;
use std::time::Instant;

use quiver_core::JobId;

use crate::job::Job;

/// `jobs` in the order slots go to them: each owner's first job (oldest owners first),
/// then each owner's second, and so on.
pub(crate) fn fair_order<'a>(jobs: impl Iterator<Item = &'a Job>) -> Vec<JobId> {
    let mut by_age: Vec<&Job> = jobs.collect();
    by_age.sort_by_key(|job| job.submitted_at);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ranked: Vec<(usize, Instant, JobId)> = by_age
        .into_iter()
        .map(|job| {
            let owner = &job.environment.owner;
            let key = owner.user.clone().unwrap_or_else(|| owner.session.clone());
            let rank = seen.entry(key).or_insert(0);
            *rank += 1;
            (*rank, job.submitted_at, job.job_id.clone())
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, _, job_id)| job_id).collect()
}
