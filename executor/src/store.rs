//! The shuffle store: producer tasks' output, in memory up to a budget, spilled to Arrow
//! IPC files under the work directory beyond it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use parking_lot::RwLock;
use quiver_core::QuiverError;
use quiver_core::batch_bytes::{SizedBatch, compacted};
use quiver_core::config::ShuffleCompression;
use quiver_core::exchange::{MapOutputKey, MapOutputSummary};
use quiver_core::proto::TaskFailure;

use crate::result_tap::{Claim, Claimant, ResultTap};

/// Stores of the executors that live in this process, so a reader next to its producer
/// takes batches straight from memory instead of over Flight.
static LOCAL_STORES: LazyLock<RwLock<HashMap<String, Weak<ShuffleStore>>>> =
    LazyLock::new(Default::default);

/// The store of executor `executor_id` if it lives in this process.
pub fn local_store(executor_id: &str) -> Option<Arc<ShuffleStore>> {
    LOCAL_STORES.read().get(executor_id).and_then(Weak::upgrade)
}

enum PartitionData {
    Memory(Vec<RecordBatch>),
    Spilled(PathBuf),
    /// A result partition a client took as it was written: nothing is left here.
    Streamed,
}

struct MapOutput {
    schema: SchemaRef,
    partitions: Vec<PartitionData>,
    memory_bytes: usize,
    /// Bytes (in memory, before spilling) of the partitions spilled to files.
    spilled_bytes: usize,
    /// Which output partitions a client has read to the end (results only).
    read_to_end: parking_lot::Mutex<Vec<bool>>,
}

/// What the store has moved since the executor started, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShuffleCounters {
    /// Bytes of map output spilled to files.
    pub spilled_bytes: AtomicU64,
    /// Bytes of shuffle input read by this executor's tasks from a store in this process
    /// (straight from memory or its files), and from other executors over Flight.
    pub fetched_local_bytes: AtomicU64,
    pub fetched_remote_bytes: AtomicU64,
}

/// One executor's shuffle output.
pub struct ShuffleStore {
    executor_id: String,
    work_dir: PathBuf,
    memory_budget: usize,
    memory_used: AtomicUsize,
    /// Bytes of the outputs held in spill files now.
    spilled_now: AtomicUsize,
    /// How spill files are compressed.
    compression: ShuffleCompression,
    /// The in-memory outputs' share of the executor's memory pool: shuffle output and
    /// results count against the executor's memory limit with its tasks' operators.
    reservation: parking_lot::Mutex<Option<MemoryReservation>>,
    pub counters: ShuffleCounters,
    outputs: RwLock<HashMap<MapOutputKey, Arc<MapOutput>>>,
    /// Result partitions read to the end and dropped, newest last (the latest
    /// [`RELEASED_RESULTS_KEPT`]), so that a second read says why it finds nothing.
    released_results: parking_lot::Mutex<std::collections::VecDeque<(MapOutputKey, u32)>>,
    /// Jobs whose data was released, with the stage kept (the result), so that a task
    /// finishing after the release cannot leave output behind.
    retired: parking_lot::Mutex<RetiredJobs>,
    /// Result partitions a client may read while their tasks write them.
    taps: parking_lot::Mutex<HashMap<MapOutputKey, Arc<ResultTap>>>,
    /// Why failed jobs failed, as the scheduler said when it released them: what a
    /// client reading their results is told.
    verdicts: parking_lot::Mutex<JobVerdicts>,
}

/// Failed jobs' errors, the latest [`RETIRED_JOBS_KEPT`].
#[derive(Default)]
struct JobVerdicts {
    errors: HashMap<String, (tonic::Code, String)>,
    order: std::collections::VecDeque<String>,
}

/// How long a client whose result task failed before it took anything waits for the
/// scheduler to run the partition again here (inputs lost with an executor are
/// recomputed first).
const RERUN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a live read of a result partition stands.
enum LiveRead {
    Live {
        store: Arc<ShuffleStore>,
        key: MapOutputKey,
        claimant: Claimant,
    },
    /// A re-run finished before the client came back to it: read from the store.
    Whole(SendableRecordBatchStream),
    Done,
}

/// What follows a result task's failure under a client that took nothing yet.
enum Rerun {
    Live(Claimant),
    Whole(SendableRecordBatchStream),
    Failed(DataFusionError),
}

/// How long a client whose result task failed waits for the scheduler's word on the
/// query, which names the real cause (a task's own error may only be a consequence).
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Result partitions remembered as read and released.
const RELEASED_RESULTS_KEPT: usize = 10_000;

/// Most released jobs remembered; a task outliving this many later releases is not
/// expected (they are aborted on release).
const RETIRED_JOBS_KEPT: usize = 10_000;

#[derive(Default)]
struct RetiredJobs {
    stage_kept: HashMap<String, Option<u32>>,
    order: std::collections::VecDeque<String>,
}

impl RetiredJobs {
    fn retire(&mut self, job_id: &str, keep_stage: Option<u32>) {
        if self
            .stage_kept
            .insert(job_id.to_string(), keep_stage)
            .is_none()
        {
            self.order.push_back(job_id.to_string());
        }
        while self.order.len() > RETIRED_JOBS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.stage_kept.remove(&oldest);
            }
        }
    }

    /// Whether output for this key comes too late to be kept.
    fn refuses(&self, key: &MapOutputKey) -> bool {
        self.stage_kept
            .get(&key.job_id)
            .is_some_and(|kept| *kept != Some(key.stage_id))
    }
}

/// Holds a result's tap open while its task runs (see [`ShuffleStore::expect_result`]).
pub(crate) struct ResultTapGuard {
    store: Arc<ShuffleStore>,
    key: MapOutputKey,
    tap: Arc<ResultTap>,
}

impl ResultTapGuard {
    /// The task failed: a client reading the result learns why (the scheduler does not
    /// retry a result task its client may be reading).
    pub(crate) fn fail(&self, failure: &TaskFailure) {
        self.tap.fail(failure.message.clone());
    }

    /// Whether the client reading the result has taken any of it.
    pub(crate) fn rows_sent(&self) -> bool {
        self.tap.taken() > 0
    }
}

impl Drop for ResultTapGuard {
    fn drop(&mut self) {
        // A no-op when the writer completed it.
        self.tap
            .fail("the task stopped before it finished writing".to_string());
        let mut taps = self.store.taps.lock();
        if taps
            .get(&self.key)
            .is_some_and(|open| Arc::ptr_eq(open, &self.tap))
        {
            taps.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for ShuffleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleStore")
            .field("executor_id", &self.executor_id)
            .field("work_dir", &self.work_dir)
            .field("memory_used", &self.memory_used.load(Ordering::Relaxed))
            .finish()
    }
}

impl ShuffleStore {
    /// A store for `executor_id`, registered as local to this process.
    pub fn new(executor_id: &str, work_dir: PathBuf, memory_budget: usize) -> Arc<Self> {
        Self::compressing(
            executor_id,
            work_dir,
            memory_budget,
            ShuffleCompression::None,
        )
    }

    /// A store whose spill files (and shuffle data sent to other executors) are
    /// compressed with `compression`.
    pub fn compressing(
        executor_id: &str,
        work_dir: PathBuf,
        memory_budget: usize,
        compression: ShuffleCompression,
    ) -> Arc<Self> {
        let store = Arc::new(Self {
            executor_id: executor_id.to_string(),
            work_dir,
            memory_budget,
            memory_used: AtomicUsize::new(0),
            spilled_now: AtomicUsize::new(0),
            compression,
            reservation: parking_lot::Mutex::new(None),
            counters: ShuffleCounters::default(),
            outputs: RwLock::new(HashMap::new()),
            released_results: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            retired: parking_lot::Mutex::new(RetiredJobs::default()),
            taps: parking_lot::Mutex::new(HashMap::new()),
            verdicts: parking_lot::Mutex::new(JobVerdicts::default()),
        });
        LOCAL_STORES
            .write()
            .insert(executor_id.to_string(), Arc::downgrade(&store));
        store
    }

    /// How this store compresses spill files, and shuffle data sent to other executors.
    pub fn compression(&self) -> ShuffleCompression {
        self.compression
    }

    /// Counts the outputs held in memory against `pool` (the executor's): an output the
    /// pool cannot take is spilled, as one past the store's own budget is.
    pub fn account_in(&self, pool: &Arc<dyn MemoryPool>) {
        let consumer = MemoryConsumer::new(format!("shuffle store of {}", self.executor_id));
        *self.reservation.lock() = Some(consumer.register(pool));
    }

    /// Takes `bytes` of memory for an output, within the store's budget and the pool.
    fn reserve(&self, bytes: usize) -> bool {
        if self.memory_used.fetch_add(bytes, Ordering::AcqRel) + bytes > self.memory_budget {
            self.memory_used.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        if let Some(reservation) = self.reservation.lock().as_mut()
            && reservation.try_grow(bytes).is_err()
        {
            self.memory_used.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Where spilled output is written.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn memory_used(&self) -> usize {
        self.memory_used.load(Ordering::Relaxed)
    }

    /// Bytes of held output that live in spill files.
    pub fn spilled_now(&self) -> usize {
        self.spilled_now.load(Ordering::Relaxed)
    }

    /// The jobs this store holds output of.
    pub fn job_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .outputs
            .read()
            .keys()
            .map(|key| key.job_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// How many producer outputs are held.
    pub fn output_count(&self) -> usize {
        self.outputs.read().len()
    }

    /// Keeps one producer task's output whole (`partitions[i]` is output partition `i`),
    /// as [`ShuffleStore::writer`] would have, batch by batch.
    pub fn put(
        self: &Arc<Self>,
        key: MapOutputKey,
        schema: SchemaRef,
        partitions: Vec<Vec<RecordBatch>>,
    ) -> Result<MapOutputSummary> {
        let mut writer = self.writer(key, schema, partitions.len());
        for (partition, batches) in partitions.into_iter().enumerate() {
            for batch in batches {
                writer.write(partition, batch)?;
            }
        }
        writer.finish()
    }

    /// Starts one producer task's output of `partitions` output partitions. Its batches
    /// are held in memory while the store's budget and the executor's memory pool take
    /// them; when they do not, the partition holding the most memory is spilled to an
    /// Arrow IPC file, and its later batches follow it there (a partition's rows keep
    /// their order).
    pub fn writer(
        self: &Arc<Self>,
        key: MapOutputKey,
        schema: SchemaRef,
        partitions: usize,
    ) -> MapOutputWriter {
        let tap = match partitions {
            1 => self.taps.lock().get(&key).cloned(),
            _ => None,
        };
        if let Some(tap) = &tap {
            tap.set_schema(Arc::clone(&schema));
        }
        MapOutputWriter {
            tap,
            store: Arc::clone(self),
            key,
            schema,
            partitions: (0..partitions).map(|_| Buffered::default()).collect(),
            rows: vec![0; partitions],
            bytes: vec![0; partitions],
            held: 0,
            spilled: 0,
            finished: false,
        }
    }

    /// Gives back `bytes` an output held in memory.
    fn unreserve(&self, bytes: usize) {
        self.memory_used.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(reservation) = self.reservation.lock().as_mut() {
            reservation.shrink(bytes.min(reservation.size()));
        }
    }

    /// Makes a finished output readable, unless its job was released meanwhile.
    fn keep(&self, key: MapOutputKey, output: MapOutput) -> Result<()> {
        let replaced = {
            let mut outputs = self.outputs.write();
            // Checked under the outputs lock: a release cannot slip in between.
            if self.retired.lock().refuses(&key) {
                drop(outputs);
                self.discard(&output);
                // The release already removed the job's directory; a late spill must not
                // leave an empty one behind.
                if output.spilled_bytes > 0 {
                    let _ = std::fs::remove_dir(self.job_dir(&key.job_id));
                }
                return Err(DataFusionError::External(Box::new(
                    QuiverError::Cancelled { job_id: key.job_id },
                )));
            }
            self.spilled_now
                .fetch_add(output.spilled_bytes, Ordering::AcqRel);
            outputs.insert(key, Arc::new(output))
        };
        if let Some(old) = replaced {
            // A re-run of the same task replaces its earlier output.
            self.forget(&old);
        }
        Ok(())
    }

    /// Streams one output partition of one producer task held here.
    pub fn read(
        &self,
        key: &MapOutputKey,
        output_partition: u32,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let output = self.outputs.read().get(key).cloned().ok_or_else(|| {
            let released = self
                .released_results
                .lock()
                .contains(&(key.clone(), output_partition));
            DataFusionError::External(Box::new(match released {
                true => result_released(key, output_partition),
                false => QuiverError::ShuffleOutputMissing {
                    job_id: key.job_id.clone(),
                    stage_id: key.stage_id,
                    map_partition: key.map_partition,
                },
            }))
        })?;
        let schema = Arc::clone(&output.schema);
        let stream: SendableRecordBatchStream =
            match output.partitions.get(output_partition as usize) {
                None => Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&schema),
                    futures::stream::empty(),
                )),
                Some(PartitionData::Memory(batches)) => Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&schema),
                    futures::stream::iter(batches.clone().into_iter().map(Ok)),
                )),
                Some(PartitionData::Spilled(path)) => spilled_stream(path.clone(), &schema),
                Some(PartitionData::Streamed) => {
                    let released = result_released(key, output_partition);
                    return Err(DataFusionError::External(Box::new(released)));
                }
            };
        Ok((schema, stream))
    }

    /// Streams a result partition for a client: a finished one from the store, one whose
    /// task still writes it as the batches come (see [`crate::result_tap`]). Reading a
    /// failed query's result fails with the query's error (a [`tonic::Status`] inside
    /// the [`DataFusionError`]).
    pub async fn read_result(
        self: &Arc<Self>,
        key: &MapOutputKey,
        output_partition: u32,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let finished = self.outputs.read().contains_key(key);
        let tap = match finished {
            true => None,
            false => self.taps.lock().get(key).cloned(),
        };
        let Some(tap) = tap.filter(|_| output_partition == 0) else {
            return match self.read(key, output_partition) {
                Ok(read) => Ok(read),
                // Neither kept nor being written: its task failed (or its executor is not
                // this one's any more); the scheduler is about to say why the query failed.
                Err(error) if is_missing(&error) => Err(self.verdict_or(&key.job_id, error).await),
                Err(error) => Err(self.verdict_now(&key.job_id).unwrap_or(error)),
            };
        };
        match tap.claim() {
            Claim::Live => self.read_live(key.clone(), tap.claimant()).await,
            Claim::Whole => {
                if let Err(error) = tap.ended().await {
                    return Err(self.verdict_or(&key.job_id, error).await);
                }
                self.read(key, output_partition)
            }
            Claim::Taken => Err(DataFusionError::External(Box::new(result_released(
                key,
                output_partition,
            )))),
        }
    }

    /// Streams a claimed result partition as its task writes it. If the task fails
    /// before the client has taken any of it, the scheduler runs it again here, and the
    /// read goes on from the new attempt; once rows were taken, the read ends with the
    /// query's error.
    async fn read_live(
        self: &Arc<Self>,
        key: MapOutputKey,
        mut claimant: Claimant,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let schema = loop {
            let failed = match claimant.tap().schema().await {
                Ok(schema) => break schema,
                Err(error) => error,
            };
            match self.rerun_of(&key, claimant.tap(), failed).await {
                Rerun::Live(next) => claimant = next,
                Rerun::Whole(stream) => return Ok((stream.schema(), stream)),
                Rerun::Failed(error) => return Err(error),
            }
        };
        let state = LiveRead::Live {
            store: Arc::clone(self),
            key,
            claimant,
        };
        let batches = futures::stream::unfold(state, |state| async move {
            let (store, key, mut claimant) = match state {
                LiveRead::Live {
                    store,
                    key,
                    claimant,
                } => (store, key, claimant),
                LiveRead::Whole(mut stream) => {
                    let batch = stream.next().await?;
                    return Some((batch, LiveRead::Whole(stream)));
                }
                LiveRead::Done => return None,
            };
            loop {
                let failed = match claimant.next().await? {
                    Ok(batch) => {
                        let state = LiveRead::Live {
                            store,
                            key,
                            claimant,
                        };
                        return Some((Ok(batch), state));
                    }
                    Err(error) => error,
                };
                if claimant.tap().taken() > 0 {
                    let error = store.verdict_or(&key.job_id, failed).await;
                    return Some((Err(error), LiveRead::Done));
                }
                match store.rerun_of(&key, claimant.tap(), failed).await {
                    Rerun::Live(next) => claimant = next,
                    Rerun::Whole(mut stream) => {
                        let batch = stream.next().await?;
                        return Some((batch, LiveRead::Whole(stream)));
                    }
                    Rerun::Failed(error) => return Some((Err(error), LiveRead::Done)),
                }
            }
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), batches));
        Ok((schema, stream))
    }

    /// After `failed` (the task behind `tap` failed before its client took anything):
    /// the re-run of the same partition here, once the scheduler starts it, or the
    /// query's error once the scheduler says it failed, or `failed` after
    /// [`RERUN_WAIT`].
    async fn rerun_of(
        self: &Arc<Self>,
        key: &MapOutputKey,
        tap: &Arc<ResultTap>,
        failed: DataFusionError,
    ) -> Rerun {
        let deadline = tokio::time::Instant::now() + RERUN_WAIT;
        loop {
            if let Some(verdict) = self.verdict_now(&key.job_id) {
                return Rerun::Failed(verdict);
            }
            if self.outputs.read().contains_key(key) {
                return match self.read(key, 0) {
                    Ok((_, stream)) => Rerun::Whole(stream),
                    Err(error) => Rerun::Failed(error),
                };
            }
            let rerun = self
                .taps
                .lock()
                .get(key)
                .filter(|open| !Arc::ptr_eq(open, tap))
                .cloned();
            if let Some(rerun) = rerun {
                return match rerun.claim() {
                    Claim::Live => Rerun::Live(rerun.claimant()),
                    Claim::Whole => match rerun.ended().await {
                        Ok(()) => match self.read(key, 0) {
                            Ok((_, stream)) => Rerun::Whole(stream),
                            Err(error) => Rerun::Failed(error),
                        },
                        Err(error) => Rerun::Failed(self.verdict_or(&key.job_id, error).await),
                    },
                    Claim::Taken => Rerun::Failed(failed),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Rerun::Failed(failed);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Job `job_id` ended without results left to read (it failed, or its client released
    /// them), as the scheduler said: clients reading its results are told `message`,
    /// with `code`.
    pub fn job_ended(&self, job_id: &str, code: tonic::Code, message: &str) {
        let mut verdicts = self.verdicts.lock();
        if verdicts
            .errors
            .insert(job_id.to_string(), (code, message.to_string()))
            .is_none()
        {
            verdicts.order.push_back(job_id.to_string());
        }
        while verdicts.order.len() > RETIRED_JOBS_KEPT {
            if let Some(oldest) = verdicts.order.pop_front() {
                verdicts.errors.remove(&oldest);
            }
        }
    }

    /// Job `job_id`'s failure, if the scheduler has said it failed.
    fn verdict_now(&self, job_id: &str) -> Option<DataFusionError> {
        let verdicts = self.verdicts.lock();
        let (code, message) = verdicts.errors.get(job_id)?;
        Some(DataFusionError::External(Box::new(tonic::Status::new(
            *code,
            message.clone(),
        ))))
    }

    /// A result task failed under its reader: the query's error once the scheduler
    /// says it (it fails the query), else after [`VERDICT_WAIT`] the task's own.
    async fn verdict_or(&self, job_id: &str, error: DataFusionError) -> DataFusionError {
        let deadline = tokio::time::Instant::now() + VERDICT_WAIT;
        loop {
            if let Some(verdict) = self.verdict_now(job_id) {
                return verdict;
            }
            if tokio::time::Instant::now() >= deadline {
                return error;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Opens the tap of result `key`, whose task is being launched: a client may read the
    /// partition while the task writes it. The guard, dropped when the task ends, closes
    /// the tap with an error unless the task finished its output.
    pub(crate) fn expect_result(self: &Arc<Self>, key: MapOutputKey) -> ResultTapGuard {
        let tap = Arc::new(ResultTap::default());
        if let Some(earlier) = self.taps.lock().insert(key.clone(), Arc::clone(&tap)) {
            earlier.fail("the task was started again".to_string());
        }
        ResultTapGuard {
            store: Arc::clone(self),
            key,
            tap,
        }
    }

    /// The tap of result `key`, if one is open (for tests and fault injection).
    pub(crate) fn result_tap(&self, key: &MapOutputKey) -> Option<Arc<ResultTap>> {
        self.taps.lock().get(key).cloned()
    }

    /// A client read result partition `output_partition` of `key` to the end: it is
    /// dropped, and the whole output once each of its partitions was read. (Results are
    /// read once: Flight SQL clients other than Quiver's own never say they are done.)
    pub fn result_read(&self, key: &MapOutputKey, output_partition: u32) {
        let all_read = {
            let outputs = self.outputs.read();
            let Some(output) = outputs.get(key) else {
                return;
            };
            let mut read = output.read_to_end.lock();
            match read.get_mut(output_partition as usize) {
                Some(flag) => *flag = true,
                None => return,
            }
            read.iter().all(|flag| *flag)
        };
        {
            let mut released = self.released_results.lock();
            if released.len() >= RELEASED_RESULTS_KEPT {
                released.pop_front();
            }
            released.push_back((key.clone(), output_partition));
        }
        if !all_read {
            return;
        }
        let removed = {
            let mut outputs = self.outputs.write();
            let removed = outputs.remove(key);
            let job_left = outputs.keys().any(|other| other.job_id == key.job_id);
            (removed, job_left)
        };
        if let (Some(output), job_left) = removed {
            self.forget(&output);
            if !job_left {
                // Its spill directory, if it has one, is empty now.
                let _ = std::fs::remove_dir(self.job_dir(&key.job_id));
            }
        }
    }

    /// Drops a job's output; with `keep_stage`, that stage's output stays (the result).
    pub fn release_job(&self, job_id: &str, keep_stage: Option<u32>) {
        let closed: Vec<Arc<ResultTap>> = {
            let mut taps = self.taps.lock();
            let keys: Vec<MapOutputKey> = taps
                .keys()
                .filter(|k| k.job_id == job_id && Some(k.stage_id) != keep_stage)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| taps.remove(k)).collect()
        };
        for tap in closed {
            tap.fail("the query was cancelled or failed".to_string());
        }
        let removed: Vec<Arc<MapOutput>> = {
            let mut outputs = self.outputs.write();
            self.retired.lock().retire(job_id, keep_stage);
            let keys: Vec<MapOutputKey> = outputs
                .keys()
                .filter(|k| k.job_id == job_id && Some(k.stage_id) != keep_stage)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| outputs.remove(k)).collect()
        };
        for output in &removed {
            self.forget(output);
        }
        if keep_stage.is_none() {
            let dir = self.job_dir(job_id);
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    /// Drops a kept output: its memory and files, and its place in the figures.
    fn forget(&self, output: &MapOutput) {
        self.spilled_now
            .fetch_sub(output.spilled_bytes, Ordering::AcqRel);
        self.discard(output);
    }

    /// Drops an output's memory and files.
    fn discard(&self, output: &MapOutput) {
        self.unreserve(output.memory_bytes);
        for partition in &output.partitions {
            if let PartitionData::Spilled(path) = partition {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn job_dir(&self, job_id: &str) -> PathBuf {
        self.work_dir.join(job_id)
    }
}

/// One output partition as it is written.
#[derive(Default)]
enum Buffered {
    #[default]
    Empty,
    Memory(Vec<RecordBatch>, usize),
    Spilled(PathBuf, Box<FileWriter<BufWriter<File>>>),
}

/// One producer task's output on its way into the store (see [`ShuffleStore::writer`]).
pub struct MapOutputWriter {
    /// Where a client reading this result while it is written takes the batches.
    tap: Option<Arc<ResultTap>>,
    store: Arc<ShuffleStore>,
    key: MapOutputKey,
    schema: SchemaRef,
    partitions: Vec<Buffered>,
    rows: Vec<u64>,
    bytes: Vec<u64>,
    /// Bytes held in memory (reserved in the store).
    held: usize,
    /// Bytes written to spill files.
    spilled: usize,
    finished: bool,
}

impl MapOutputWriter {
    pub fn write(&mut self, partition: usize, batch: RecordBatch) -> Result<()> {
        if partition >= self.partitions.len() {
            return Err(DataFusionError::Internal(format!(
                "output partition {partition} of {}",
                self.partitions.len()
            )));
        }
        if self.tap.as_ref().is_some_and(|tap| tap.is_abandoned()) {
            // The partition is read once, by its claimant: the rest has no reader.
            return Err(DataFusionError::Execution(
                "the client reading this result partition went away before its end; the \
                 query stops"
                    .to_string(),
            ));
        }
        let SizedBatch {
            batch,
            memory: size,
            data,
        } = compacted(batch);
        self.rows[partition] += batch.num_rows() as u64;
        self.bytes[partition] += data as u64;
        let batch = match self.give_to_claimant(partition, batch) {
            None => return Ok(()),
            Some(batch) => batch,
        };
        if matches!(self.partitions[partition], Buffered::Spilled(..)) {
            return self.append(partition, &batch, size);
        }
        let mut batch = match self.hold(partition, batch, size) {
            Ok(()) => return Ok(()),
            Err(batch) => batch,
        };
        // Memory is short: the partition holding the most goes to a file, then this batch
        // is placed again (in memory if that made room, else in its partition's file).
        if let Some(largest) = self.largest_in_memory().filter(|&l| l != partition) {
            self.spill(largest)?;
            batch = match self.hold(partition, batch, size) {
                Ok(()) => return Ok(()),
                Err(batch) => batch,
            };
        }
        self.spill(partition)?;
        // A client claimed the partition just before it would have spilled.
        let batch = match self.give_to_claimant(partition, batch) {
            None => return Ok(()),
            Some(batch) => batch,
        };
        self.append(partition, &batch, size)
    }

    /// Hands `batch` (and the partition's batches held so far) to a client reading the
    /// result as it is written; gives it back when there is none.
    fn give_to_claimant(&mut self, partition: usize, batch: RecordBatch) -> Option<RecordBatch> {
        let Some(tap) = self.tap.as_ref().filter(|tap| tap.is_claimed()).cloned() else {
            return Some(batch);
        };
        self.hand_over_held(partition, &tap);
        tap.hand_over([batch]);
        None
    }

    /// Moves the partition's batches held in memory to the tap's claimant.
    fn hand_over_held(&mut self, partition: usize, tap: &ResultTap) {
        if let Buffered::Memory(batches, bytes) = std::mem::take(&mut self.partitions[partition]) {
            self.store.unreserve(bytes);
            self.held -= bytes;
            tap.hand_over(batches);
        }
    }

    /// A wait for a client reading this result as it is written to take what it has.
    /// A client that claimed the result since the last write gets the batches held so
    /// far at once.
    pub fn room(
        &mut self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let tap = self.tap.as_ref().filter(|tap| tap.is_claimed())?;
        let tap = Arc::clone(tap);
        self.hand_over_held(0, &tap);
        tap.room()
    }

    /// Keeps `batch` in memory if its partition is not spilled and the store can reserve
    /// it; gives it back otherwise.
    fn hold(
        &mut self,
        partition: usize,
        batch: RecordBatch,
        size: usize,
    ) -> Result<(), RecordBatch> {
        if matches!(self.partitions[partition], Buffered::Spilled(..)) || !self.store.reserve(size)
        {
            return Err(batch);
        }
        self.held += size;
        match &mut self.partitions[partition] {
            Buffered::Memory(batches, bytes) => {
                batches.push(batch);
                *bytes += size;
            }
            slot => *slot = Buffered::Memory(vec![batch], size),
        }
        Ok(())
    }

    fn largest_in_memory(&self) -> Option<usize> {
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(index, buffered)| match buffered {
                Buffered::Memory(_, bytes) if *bytes > 0 => Some((index, *bytes)),
                _ => None,
            })
            .max_by_key(|(_, bytes)| *bytes)
            .map(|(index, _)| index)
    }

    /// Moves partition `partition` to its spill file (once spilled, it stays there).
    fn spill(&mut self, partition: usize) -> Result<()> {
        if matches!(self.partitions[partition], Buffered::Spilled(..)) {
            return Ok(());
        }
        if let Some(tap) = &self.tap
            && !tap.close_claims()
        {
            return Ok(()); // claimed: its batches go to the client instead
        }
        let dir = self.store.job_dir(&self.key.job_id);
        std::fs::create_dir_all(&dir).map_err(|e| spill_error(&dir, e))?;
        let path = dir.join(format!(
            "stage{}-map{}-out{partition}.arrow",
            self.key.stage_id, self.key.map_partition
        ));
        let file = File::create(&path).map_err(|e| spill_error(&path, e))?;
        let mut writer = Box::new(FileWriter::try_new_with_options(
            BufWriter::new(file),
            &self.schema,
            self.store.compression.ipc_options(),
        )?);
        if let Buffered::Memory(batches, bytes) = std::mem::take(&mut self.partitions[partition]) {
            for batch in &batches {
                writer.write(batch)?;
            }
            self.store.unreserve(bytes);
            self.held -= bytes;
            self.spilled += bytes;
            self.store
                .counters
                .spilled_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        self.partitions[partition] = Buffered::Spilled(path, writer);
        Ok(())
    }

    fn append(&mut self, partition: usize, batch: &RecordBatch, size: usize) -> Result<()> {
        if let Buffered::Spilled(_, writer) = &mut self.partitions[partition] {
            writer.write(batch)?;
            self.spilled += size;
            self.store
                .counters
                .spilled_bytes
                .fetch_add(size as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The output is complete: it becomes readable.
    pub fn finish(mut self) -> Result<MapOutputSummary> {
        let claimed = self.tap.as_ref().filter(|tap| !tap.close_claims()).cloned();
        if let Some(tap) = &claimed {
            self.hand_over_held(0, tap);
        }
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for buffered in std::mem::take(&mut self.partitions) {
            partitions.push(match buffered {
                Buffered::Empty if claimed.is_some() => PartitionData::Streamed,
                Buffered::Empty => PartitionData::Memory(Vec::new()),
                Buffered::Memory(batches, _) => PartitionData::Memory(batches),
                Buffered::Spilled(path, mut writer) => {
                    writer.finish()?;
                    PartitionData::Spilled(path)
                }
            });
        }
        self.finished = true;
        let summary = MapOutputSummary {
            rows: std::mem::take(&mut self.rows),
            bytes: std::mem::take(&mut self.bytes),
            spilled_bytes: self.spilled as u64,
        };
        let output = MapOutput {
            schema: Arc::clone(&self.schema),
            read_to_end: parking_lot::Mutex::new(vec![false; partitions.len()]),
            partitions,
            memory_bytes: self.held,
            spilled_bytes: self.spilled,
        };
        self.store.keep(self.key.clone(), output)?;
        if let Some(tap) = &self.tap {
            tap.complete();
        }
        Ok(summary)
    }
}

impl Drop for MapOutputWriter {
    /// An output abandoned unfinished (its task failed or was stopped) leaves nothing.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.store.unreserve(self.held);
        for buffered in std::mem::take(&mut self.partitions) {
            if let Buffered::Spilled(path, writer) = buffered {
                drop(writer);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for ShuffleStore {
    fn drop(&mut self) {
        LOCAL_STORES.write().remove(&self.executor_id);
    }
}

/// A result partition read already (to the end, or by another client as it was
/// written): it is not here any more.
fn result_released(key: &MapOutputKey, output_partition: u32) -> QuiverError {
    QuiverError::ResultReleased {
        job_id: key.job_id.clone(),
        map_partition: key.map_partition,
        output_partition,
    }
}

/// Whether `error` says an output is not here (rather than read and released).
fn is_missing(error: &DataFusionError) -> bool {
    matches!(error, DataFusionError::External(inner)
        if matches!(inner.downcast_ref::<QuiverError>(), Some(QuiverError::ShuffleOutputMissing { .. })))
}

fn spill_error(path: &Path, error: std::io::Error) -> DataFusionError {
    DataFusionError::IoError(std::io::Error::new(
        error.kind(),
        format!("spilling shuffle output to {}: {error}", path.display()),
    ))
}

/// A spill file's batches, read one at a time on a blocking thread as the reader takes
/// them (at most two read ahead): memory holds a batch or two, not the file.
fn spilled_stream(path: PathBuf, schema: &SchemaRef) -> SendableRecordBatchStream {
    let batches = futures::stream::once(async move {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        tokio::task::spawn_blocking(move || {
            let reader = File::open(&path)
                .map_err(|e| spill_error(&path, e))
                .and_then(|file| Ok(FileReader::try_new(BufReader::new(file), None)?));
            match reader {
                Ok(reader) => {
                    for batch in reader {
                        // The reader went away: stop reading.
                        if sender.blocking_send(batch.map_err(Into::into)).is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                }
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        })
    });
    Box::pin(RecordBatchStreamAdapter::new(
        Arc::clone(schema),
        futures::StreamExt::flatten(batches),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;
    use quiver_core::proto::FailureKind;

    fn batch(values: &[i32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))]).unwrap()
    }

    fn key(stage_id: u32) -> MapOutputKey {
        MapOutputKey {
            job_id: "job".to_string(),
            stage_id,
            map_partition: 0,
        }
    }

    async fn read_all(store: &ShuffleStore, key: &MapOutputKey, partition: u32) -> Vec<i32> {
        let (_, stream) = store.read(key, partition).unwrap();
        values(stream).await.unwrap()
    }

    #[tokio::test]
    async fn keeps_small_outputs_in_memory_and_spills_past_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let first = batch(&[1, 2, 3]);
        let budget = first.get_array_memory_size() + 1;
        let store = ShuffleStore::new("store-test-exec", dir.path().to_path_buf(), budget);

        let summary = store
            .put(key(1), first.schema(), vec![vec![first.clone()], vec![]])
            .unwrap();
        assert_eq!(summary.rows, vec![3, 0]);
        assert_eq!(summary.spilled_bytes, 0);

        let summary = store
            .put(key(2), first.schema(), vec![vec![batch(&[7, 8])]])
            .unwrap();
        assert!(summary.spilled_bytes > 0, "second output should spill");
        assert!(dir.path().join("job").exists());
        assert_eq!(store.spilled_now() as u64, summary.spilled_bytes);
        let spilled_total = store.counters.spilled_bytes.load(Ordering::Relaxed);
        assert_eq!(spilled_total, summary.spilled_bytes);

        assert_eq!(read_all(&store, &key(1), 0).await, vec![1, 2, 3]);
        assert_eq!(read_all(&store, &key(1), 1).await, Vec::<i32>::new());
        assert_eq!(read_all(&store, &key(2), 0).await, vec![7, 8]);
        assert!(local_store("store-test-exec").is_some());

        store.release_job("job", Some(1));
        assert_eq!(store.output_count(), 1);
        assert_eq!(store.spilled_now(), 0, "the spilled output was released");
        store.release_job("job", None);
        assert_eq!(store.output_count(), 0);
        assert_eq!(store.memory_used(), 0);
        assert!(!dir.path().join("job").exists());
        assert!(store.read(&key(1), 0).is_err());
    }

    async fn values(stream: SendableRecordBatchStream) -> Result<Vec<i32>> {
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok(batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect())
    }

    #[tokio::test]
    async fn a_result_claimed_while_written_is_streamed_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new("store-test-tap", dir.path().to_path_buf(), 1 << 20);
        let result = key(7);
        let guard = store.expect_result(result.clone());
        let mut writer = store.writer(result.clone(), batch(&[0]).schema(), 1);
        writer.write(0, batch(&[1, 2])).unwrap();
        // Claimed after a first batch: it gets that one too, at the next write.
        let (_, stream) = store.read_result(&result, 0).await.unwrap();
        writer.write(0, batch(&[3])).unwrap();
        let reading = tokio::spawn(values(stream));
        writer.finish().unwrap();
        drop(guard);
        assert_eq!(reading.await.unwrap().unwrap(), vec![1, 2, 3]);
        // What was streamed is not kept: a second reader is told it was read.
        let again = store
            .read_result(&result, 0)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(again.contains("read to the end and released"), "{again}");
        assert_eq!(store.memory_used(), 0);
    }

    #[tokio::test]
    async fn a_result_whose_reader_went_away_stops_its_task() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new("store-test-gone", dir.path().to_path_buf(), 1 << 20);
        let result = key(10);
        let _guard = store.expect_result(result.clone());
        let mut writer = store.writer(result.clone(), batch(&[0]).schema(), 1);
        let (_, stream) = store.read_result(&result, 0).await.unwrap();
        writer.write(0, batch(&[1])).unwrap();
        drop(stream);
        let error = writer.write(0, batch(&[2])).unwrap_err().to_string();
        assert!(error.contains("went away"), "{error}");
    }

    #[tokio::test]
    async fn a_result_nobody_claimed_is_read_whole_after_its_task() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new("store-test-untapped", dir.path().to_path_buf(), 1 << 20);
        let result = key(8);
        let guard = store.expect_result(result.clone());
        let mut writer = store.writer(result.clone(), batch(&[0]).schema(), 1);
        writer.write(0, batch(&[4, 5])).unwrap();
        writer.finish().unwrap();
        drop(guard);
        assert_eq!(read_all(&store, &result, 0).await, vec![4, 5]);
    }

    #[tokio::test]
    async fn a_reader_of_a_task_that_fails_gets_its_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new("store-test-failed", dir.path().to_path_buf(), 1 << 20);
        let result = key(9);
        let guard = store.expect_result(result.clone());
        let mut writer = store.writer(result.clone(), batch(&[0]).schema(), 1);
        let (_, stream) = store.read_result(&result, 0).await.unwrap();
        writer.write(0, batch(&[6])).unwrap();
        let reading = tokio::spawn(values(stream));
        // Give the reader its batch before the task fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while guard.tap.taken() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the batch was not taken"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(writer);
        guard.fail(&TaskFailure {
            message: "disk on fire".to_string(),
            kind: FailureKind::Io as i32,
            ..TaskFailure::default()
        });
        drop(guard);
        // The scheduler fails the query and says why, as it releases the job: the
        // reader is told the query's error, and so is a reader coming later.
        store.job_ended(
            "job",
            tonic::Code::Aborted,
            "query failed in stage 9: disk on fire",
        );
        let error = reading.await.unwrap().unwrap_err().to_string();
        assert!(error.contains("query failed in stage 9"), "{error}");
        let later = store
            .read_result(&result, 0)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(later.contains("query failed in stage 9"), "{later}");
    }
}

#[cfg(test)]
mod pool_tests {
    use std::sync::Arc;

    use futures::TryStreamExt;

    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};

    use super::*;

    #[test]
    fn outputs_in_memory_count_against_the_executors_pool() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int32Array::from((0..1000).collect::<Vec<i32>>()))],
        )
        .unwrap();
        let size = batch.get_array_memory_size();
        // The store's own budget would take ten outputs; the pool has room for one.
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(size + size / 2));
        let store = ShuffleStore::new("pool-test-exec", dir.path().to_path_buf(), size * 10);
        store.account_in(&pool);
        let key = |map_partition| MapOutputKey {
            job_id: "job".to_string(),
            stage_id: 0,
            map_partition,
        };
        let first = store
            .put(key(0), Arc::clone(&schema), vec![vec![batch.clone()]])
            .unwrap();
        assert_eq!(first.spilled_bytes, 0);
        assert_eq!(
            pool.reserved(),
            size,
            "the output held in memory is in the pool"
        );
        let second = store
            .put(key(1), Arc::clone(&schema), vec![vec![batch.clone()]])
            .unwrap();
        assert!(
            second.spilled_bytes > 0,
            "the pool is full: the output spills"
        );
        assert_eq!(store.memory_used(), size);
        store.release_job("job", None);
        assert_eq!(pool.reserved(), 0);
        assert_eq!(store.memory_used(), 0);
    }
    #[tokio::test]
    async fn a_writer_spills_its_largest_partition_when_the_pool_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = |start: i32| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from(
                    (start..start + 1000).collect::<Vec<i32>>(),
                ))],
            )
            .unwrap()
        };
        let size = batch(0).get_array_memory_size();
        // Room for three batches: partition 0 gets four, partitions 1 and 2 one each.
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(size * 3 + size / 2));
        let store = ShuffleStore::new("writer-test-exec", dir.path().to_path_buf(), size * 100);
        store.account_in(&pool);
        let key = MapOutputKey {
            job_id: "job".to_string(),
            stage_id: 0,
            map_partition: 0,
        };
        let mut writer = store.writer(key.clone(), Arc::clone(&schema), 3);
        writer.write(1, batch(10_000)).unwrap();
        for start in [0, 1000, 2000, 3000] {
            writer.write(0, batch(start)).unwrap();
            assert!(pool.reserved() <= size * 3, "never past the pool");
        }
        writer.write(2, batch(20_000)).unwrap();
        let summary = writer.finish().unwrap();
        assert_eq!(summary.rows, vec![4000, 1000, 1000]);
        assert!(summary.spilled_bytes >= 4 * size as u64 - size as u64);
        assert_eq!(
            store.memory_used(),
            2 * size,
            "partitions 1 and 2 stay in memory"
        );
        let values = |partition: u32| {
            let store = Arc::clone(&store);
            let key = key.clone();
            async move {
                let (_, stream) = store.read(&key, partition).unwrap();
                let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
                batches
                    .iter()
                    .flat_map(|b| {
                        let column = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
                        column.values().to_vec()
                    })
                    .collect::<Vec<i32>>()
            }
        };
        assert_eq!(values(0).await, (0..4000).collect::<Vec<i32>>(), "in order");
        assert_eq!(values(1).await, (10_000..11_000).collect::<Vec<i32>>());

        // A writer dropped unfinished (its task failed) leaves nothing behind.
        let other = MapOutputKey {
            map_partition: 1,
            ..key.clone()
        };
        let mut abandoned = store.writer(other, Arc::clone(&schema), 1);
        for start in [0, 1000, 2000, 3000] {
            abandoned.write(0, batch(start)).unwrap();
        }
        drop(abandoned);
        assert_eq!(store.memory_used(), 2 * size);
        store.release_job("job", None);
        assert_eq!(pool.reserved(), 0);
        assert!(!dir.path().join("job").exists());
    }
}
