//! Identifiers that travel between scheduler, executors and clients.

use std::fmt;

/// One submitted query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A fresh, unique job id.
    pub fn new_random() -> Self {
        // Short enough to read in logs, random enough not to collide.
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self(id[..16].to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for JobId {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for JobId {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stage of a job: the part of the plan between two exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(pub u32);

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One attempt at running one partition of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskAttempt {
    pub job_id: JobId,
    pub stage_id: StageId,
    pub partition: u32,
    pub attempt: u32,
}

impl TaskAttempt {
    pub fn to_proto(&self) -> crate::proto::TaskKey {
        crate::proto::TaskKey {
            job_id: self.job_id.to_string(),
            stage_id: self.stage_id.0,
            partition: self.partition,
            attempt: self.attempt,
        }
    }

    pub fn from_proto(key: &crate::proto::TaskKey) -> Self {
        Self {
            job_id: JobId::from(key.job_id.as_str()),
            stage_id: StageId(key.stage_id),
            partition: key.partition,
            attempt: key.attempt,
        }
    }
}

impl fmt::Display for TaskAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} stage {} partition {} attempt {}",
            self.job_id, self.stage_id, self.partition, self.attempt
        )
    }
}
