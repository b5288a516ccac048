//! Results read while they are written. The scheduler marks the tasks of a query's final
//! stage whose client may read them early; for each, the executor opens a tap when it
//! accepts the launch (before it answers, so that a client sent here finds it). The first
//! client to ask for the partition claims the tap and takes the batches as the task
//! writes them, instead of waiting for the task to finish.
//!
//! A claimed partition is read once, by its claimant: what the client has taken is gone
//! from the executor. If the task then fails (or is stopped, or re-run), the claimant's
//! stream ends with an error saying so; it never sees a second attempt's rows after the
//! first's. A partition spilled to disk before anyone claimed it is read whole once its
//! task has finished, as a result that is not streamed is.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Batches a claimant may have waiting before the task writing them pauses for it.
const QUEUE_BATCHES: usize = 4;

/// One result partition's batches on their way from its task to the client reading it.
#[derive(Default)]
pub(crate) struct ResultTap {
    state: Mutex<TapState>,
    /// Woken on every change: readers wait for batches, the writer for room.
    changed: Notify,
}

#[derive(Default)]
struct TapState {
    schema: Option<SchemaRef>,
    claim: ClaimState,
    /// Batches handed over and not yet taken by the claimant.
    queue: VecDeque<RecordBatch>,
    /// Batches the claimant has taken.
    taken: u64,
    /// The output went to a spill file, or was finished, before any client claimed it:
    /// it is read whole.
    whole: bool,
    end: Option<TapEnd>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ClaimState {
    #[default]
    Open,
    Claimed,
    /// The claimant went away before the end: later batches are dropped.
    Abandoned,
}

/// How the writing ended.
#[derive(Debug, Clone)]
enum TapEnd {
    /// Every batch has been handed over (or, unclaimed, kept in the store).
    Complete,
    Failed(String),
}

/// What a client asking for the partition gets.
pub(crate) enum Claim {
    /// It takes the batches as they are written.
    Live,
    /// It waits for the task to finish and reads the whole partition.
    Whole,
    /// Another client already reads it.
    Taken,
}

impl ResultTap {
    /// Claims the partition for a client (see [`Claim`]).
    pub(crate) fn claim(&self) -> Claim {
        let mut state = self.state.lock();
        match (state.claim, state.whole) {
            (ClaimState::Open, false) => {
                state.claim = ClaimState::Claimed;
                Claim::Live
            }
            (ClaimState::Open, true) => Claim::Whole,
            _ => Claim::Taken,
        }
    }

    /// Whether a client takes the batches as written (the writer hands them over).
    pub(crate) fn is_claimed(&self) -> bool {
        self.state.lock().claim != ClaimState::Open
    }

    /// Whether the client reading went away before the end: nobody will read the rest.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.state.lock().claim == ClaimState::Abandoned
    }

    /// The writer started: its schema is what the claimant's stream carries.
    pub(crate) fn set_schema(&self, schema: SchemaRef) {
        self.state.lock().schema = Some(schema);
        self.changed.notify_waiters();
    }

    /// The writer spills the partition, or finishes it: unless a client claimed it
    /// already (then `false`), clients read it whole once the task has finished.
    pub(crate) fn close_claims(&self) -> bool {
        let mut state = self.state.lock();
        if state.claim != ClaimState::Open {
            return false;
        }
        state.whole = true;
        true
    }

    /// Hands batches to the claimant.
    pub(crate) fn hand_over(&self, batches: impl IntoIterator<Item = RecordBatch>) {
        let mut state = self.state.lock();
        if state.claim == ClaimState::Claimed {
            state.queue.extend(batches);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Every batch was written: the claimant's stream ends once it has taken them.
    pub(crate) fn complete(&self) {
        self.end(TapEnd::Complete);
    }

    /// The task failed or stopped: a claimant's stream ends with `reason`.
    pub(crate) fn fail(&self, reason: String) {
        self.end(TapEnd::Failed(reason));
    }

    fn end(&self, end: TapEnd) {
        let mut state = self.state.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Whether writing has ended, one way or the other.
    pub(crate) fn has_ended(&self) -> bool {
        self.state.lock().end.is_some()
    }

    /// Batches the claimant has taken.
    pub(crate) fn taken(&self) -> u64 {
        self.state.lock().taken
    }

    /// A wait for the claimant to make room, when its queue is full.
    pub(crate) fn room(self: &Arc<Self>) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        if !self.queue_full() {
            return None;
        }
        let tap = Arc::clone(self);
        Some(Box::pin(async move {
            loop {
                let changed = tap.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if !tap.queue_full() {
                    return;
                }
                changed.await;
            }
        }))
    }

    fn queue_full(&self) -> bool {
        let state = self.state.lock();
        state.claim == ClaimState::Claimed
            && state.end.is_none()
            && state.queue.len() >= QUEUE_BATCHES
    }

    /// The schema, once the writer has started (an error if the task ended first).
    pub(crate) async fn schema(&self) -> Result<SchemaRef> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.state.lock();
                if let Some(schema) = &state.schema {
                    return Ok(Arc::clone(schema));
                }
                if let Some(TapEnd::Failed(reason)) = &state.end {
                    return Err(failed(reason));
                }
                if state.end.is_some() {
                    return Err(DataFusionError::Internal(
                        "a result task ended without writing".to_string(),
                    ));
                }
            }
            changed.await;
        }
    }

    /// Waits for the writing to end: `Ok` once the task has finished its output.
    pub(crate) async fn ended(&self) -> Result<()> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.state.lock().end.clone() {
                Some(TapEnd::Complete) => return Ok(()),
                Some(TapEnd::Failed(reason)) => return Err(failed(&reason)),
                None => {}
            }
            changed.await;
        }
    }

    /// The claimant's next batch: `None` at the end.
    async fn next(&self) -> Option<Result<RecordBatch>> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state.lock();
                if let Some(batch) = state.queue.pop_front() {
                    state.taken += 1;
                    drop(state);
                    self.changed.notify_waiters();
                    return Some(Ok(batch));
                }
                match &state.end {
                    Some(TapEnd::Complete) => return None,
                    Some(TapEnd::Failed(reason)) => {
                        return Some(Err(failed_after(reason, state.taken)));
                    }
                    None => {}
                }
            }
            changed.await;
        }
    }

    /// The claimant's stream of batches (after [`Claim::Live`]).
    #[cfg(test)]
    pub(crate) fn stream(
        self: Arc<Self>,
    ) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static {
        let reader = self.claimant();
        futures::stream::unfold(Some(reader), |reader| async move {
            let reader = reader?;
            match reader.next().await {
                Some(Ok(batch)) => Some((Ok(batch), Some(reader))),
                Some(Err(error)) => Some((Err(error), None)),
                None => None,
            }
        })
    }

    /// The claimant's hold on the tap (after [`Claim::Live`]).
    pub(crate) fn claimant(self: Arc<Self>) -> Claimant {
        Claimant { tap: self }
    }
}

/// The claimant's hold on a tap: dropped before the end (the client went away), the
/// writer stops handing batches over, and stops waiting for room.
pub(crate) struct Claimant {
    tap: Arc<ResultTap>,
}

impl Claimant {
    /// The next batch: `None` at the end.
    pub(crate) async fn next(&self) -> Option<Result<RecordBatch>> {
        self.tap.next().await
    }

    /// The tap held.
    pub(crate) fn tap(&self) -> &Arc<ResultTap> {
        &self.tap
    }
}

impl Drop for Claimant {
    fn drop(&mut self) {
        let mut state = self.tap.state.lock();
        if state.end.is_none() || !state.queue.is_empty() {
            state.claim = ClaimState::Abandoned;
            state.queue.clear();
        }
        drop(state);
        self.tap.changed.notify_waiters();
    }
}

fn failed(reason: &str) -> DataFusionError {
    failed_after(reason, 0)
}

/// The error a claimant gets when the task fails after it took `taken` batches.
fn failed_after(reason: &str, taken: u64) -> DataFusionError {
    match taken {
        0 => DataFusionError::Execution(format!(
            "the task computing this result partition failed: {reason}"
        )),
        _ => DataFusionError::Execution(format!(
            "the task computing this result partition failed while it was being read: \
             {reason}; the rows already sent are not sent again, so run the query again"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;

    fn batch(value: i32) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![value]))]).unwrap()
    }

    fn value(batch: &RecordBatch) -> i32 {
        batch
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .value(0)
    }

    #[tokio::test]
    async fn a_claimant_takes_batches_before_the_end_and_stops_at_it() {
        let tap = Arc::new(ResultTap::default());
        assert!(matches!(tap.claim(), Claim::Live));
        assert!(matches!(tap.claim(), Claim::Taken));
        let mut stream = Box::pin(Arc::clone(&tap).stream());
        tap.hand_over([batch(1)]);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(value(&first), 1);
        assert!(!tap.has_ended());
        tap.hand_over([batch(2)]);
        tap.complete();
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(value(&second), 2);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_failure_ends_the_claimants_stream_with_an_error_after_what_it_took() {
        let tap = Arc::new(ResultTap::default());
        assert!(matches!(tap.claim(), Claim::Live));
        let mut stream = Box::pin(Arc::clone(&tap).stream());
        tap.hand_over([batch(1)]);
        assert_eq!(value(&stream.next().await.unwrap().unwrap()), 1);
        tap.fail("executor stopped".to_string());
        let error = stream.next().await.unwrap().unwrap_err().to_string();
        assert!(error.contains("executor stopped"), "{error}");
        assert!(error.contains("not sent again"), "{error}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_spilled_partition_is_read_whole_and_a_claimed_one_cannot_spill() {
        let spilled = ResultTap::default();
        assert!(spilled.close_claims());
        assert!(matches!(spilled.claim(), Claim::Whole));
        let claimed = ResultTap::default();
        assert!(matches!(claimed.claim(), Claim::Live));
        assert!(!claimed.close_claims());
    }

    #[tokio::test]
    async fn the_writer_waits_for_room_until_the_claimant_takes_a_batch() {
        let tap = Arc::new(ResultTap::default());
        assert!(tap.room().is_none(), "nobody claimed it: no wait");
        assert!(matches!(tap.claim(), Claim::Live));
        tap.hand_over((0..QUEUE_BATCHES as i32).map(batch));
        let room = tap.room().expect("the queue is full");
        let mut stream = Box::pin(Arc::clone(&tap).stream());
        assert_eq!(value(&stream.next().await.unwrap().unwrap()), 0);
        tokio::time::timeout(std::time::Duration::from_secs(5), room)
            .await
            .expect("taking a batch makes room");
        drop(stream);
        tap.hand_over([batch(9)]);
        assert!(
            tap.room().is_none(),
            "an abandoned tap never makes the writer wait"
        );
    }

    #[tokio::test]
    async fn the_schema_waits_for_the_writer_or_its_failure() {
        let tap = Arc::new(ResultTap::default());
        let waiting = tokio::spawn({
            let tap = Arc::clone(&tap);
            async move { tap.schema().await }
        });
        tap.set_schema(batch(0).schema());
        assert_eq!(waiting.await.unwrap().unwrap(), batch(0).schema());
        let never = ResultTap::default();
        never.fail("plan did not decode".to_string());
        let error = never.schema().await.unwrap_err().to_string();
        assert!(error.contains("plan did not decode"), "{error}");
    }
}
