//! The executors the scheduler knows: where they are, how many slots they have free,
//! which tasks they run, and when they last spoke.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use quiver_core::proto::executor_control_client::ExecutorControlClient;
use quiver_core::proto::{ExecutorRegistration, HeartbeatRequest};
use quiver_core::security::{AttachClusterSecret, ClusterSecret, ControlChannel};
use quiver_core::transport::lazy_channel;
use quiver_core::{QuiverError, TaskAttempt};
use tonic::service::interceptor::InterceptedService;

/// Largest control message (task definitions carry plans).
pub(crate) const MAX_CONTROL_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct ExecutorEntry {
    pub(crate) registration: ExecutorRegistration,
    pub(crate) url: String,
    pub(crate) client: ExecutorControlClient<ControlChannel>,
    pub(crate) running: HashSet<TaskAttempt>,
    pub(crate) last_seen: Instant,
    /// Shutting down: finishes what it runs, takes nothing new.
    pub(crate) draining: bool,
    /// Which `Attach` stream of this executor is current (0: none yet).
    pub(crate) attachment: u64,
    /// From the last heartbeat.
    pub(crate) reported_tasks: u32,
    pub(crate) memory_reserved: u64,
    pub(crate) shuffle_memory_bytes: u64,
    pub(crate) shuffle_spilled_bytes: u64,
}

impl ExecutorEntry {
    pub(crate) fn free_slots(&self) -> usize {
        if self.draining {
            return 0;
        }
        (self.registration.slots as usize).saturating_sub(self.running.len())
    }
}

/// Live executors, keyed by id.
#[derive(Debug, Default)]
pub(crate) struct ExecutorRegistry {
    executors: BTreeMap<String, ExecutorEntry>,
    /// Presented on every call to an executor.
    cluster_secret: ClusterSecret,
    /// Certificate authority of executors that serve TLS.
    tls_ca: Option<Vec<u8>>,
}

impl ExecutorRegistry {
    pub(crate) fn new(cluster_secret: ClusterSecret, tls_ca: Option<Vec<u8>>) -> Self {
        Self {
            executors: BTreeMap::new(),
            cluster_secret,
            tls_ca,
        }
    }

    /// Adds (or refreshes) an executor. Returns true if it was not known before.
    pub(crate) fn register(
        &mut self,
        registration: ExecutorRegistration,
    ) -> Result<bool, QuiverError> {
        if let Some(entry) = self.executors.get_mut(&registration.executor_id) {
            entry.last_seen = Instant::now();
            return Ok(false);
        }
        let scheme = if registration.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}:{}", registration.host, registration.port);
        let channel = lazy_channel(&url, self.tls_ca.as_deref())?;
        let channel = InterceptedService::new(
            channel,
            AttachClusterSecret::new(self.cluster_secret.clone()),
        );
        let client = ExecutorControlClient::new(channel)
            .max_encoding_message_size(MAX_CONTROL_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_CONTROL_MESSAGE_BYTES);
        self.executors.insert(
            registration.executor_id.clone(),
            ExecutorEntry {
                registration,
                url,
                client,
                running: HashSet::new(),
                last_seen: Instant::now(),
                draining: false,
                attachment: 0,
                reported_tasks: 0,
                memory_reserved: 0,
                shuffle_memory_bytes: 0,
                shuffle_spilled_bytes: 0,
            },
        );
        Ok(true)
    }

    /// Records a heartbeat; false if the executor is unknown.
    pub(crate) fn heartbeat(&mut self, beat: &HeartbeatRequest) -> bool {
        match self.executors.get_mut(&beat.executor_id) {
            Some(entry) => {
                entry.last_seen = Instant::now();
                entry.reported_tasks = beat.running_tasks;
                entry.memory_reserved = beat.memory_reserved;
                entry.shuffle_memory_bytes = beat.shuffle_memory_bytes;
                entry.shuffle_spilled_bytes = beat.shuffle_spilled_bytes;
                true
            }
            None => false,
        }
    }

    pub(crate) fn get(&self, executor_id: &str) -> Option<&ExecutorEntry> {
        self.executors.get(executor_id)
    }

    pub(crate) fn get_mut(&mut self, executor_id: &str) -> Option<&mut ExecutorEntry> {
        self.executors.get_mut(executor_id)
    }

    pub(crate) fn remove(&mut self, executor_id: &str) -> Option<ExecutorEntry> {
        self.executors.remove(executor_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.executors.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.executors.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ExecutorEntry> {
        self.executors.values()
    }

    /// The executor with the most free slots, if any has one; `avoid` (where the task
    /// last failed) is taken only when no other executor has a free slot.
    pub(crate) fn pick_free(&self, avoid: Option<&str>) -> Option<String> {
        let free = || self.executors.values().filter(|e| e.free_slots() > 0);
        free()
            .filter(|e| Some(e.registration.executor_id.as_str()) != avoid)
            .max_by_key(|e| e.free_slots())
            .or_else(|| free().max_by_key(|e| e.free_slots()))
            .map(|e| e.registration.executor_id.clone())
    }

    /// `executor_id`, if it is here and has a free slot (a task that must run there).
    pub(crate) fn pick_exactly(&self, executor_id: &str) -> Option<String> {
        self.executors
            .values()
            .find(|e| e.registration.executor_id == executor_id && e.free_slots() > 0)
            .map(|e| e.registration.executor_id.clone())
    }

    /// For a task that needs no slot: the executor running the fewest tasks, even if all
    /// its slots are taken (draining ones excepted).
    pub(crate) fn pick_least_busy(&self, avoid: Option<&str>) -> Option<String> {
        let open = || self.executors.values().filter(|e| !e.draining);
        open()
            .filter(|e| Some(e.registration.executor_id.as_str()) != avoid)
            .min_by_key(|e| e.running.len())
            .or_else(|| open().min_by_key(|e| e.running.len()))
            .map(|e| e.registration.executor_id.clone())
    }

    /// Executors silent for longer than `timeout`.
    pub(crate) fn expired(&self, timeout: Duration) -> Vec<String> {
        let now = Instant::now();
        self.executors
            .values()
            .filter(|e| now.duration_since(e.last_seen) > timeout)
            .map(|e| e.registration.executor_id.clone())
            .collect()
    }
}
