//! The executor's control service: the scheduler launches tasks and releases jobs here.

use std::sync::Arc;

use quiver_core::prometheus::CallCounts;
use quiver_core::proto::executor_control_server::ExecutorControl;
use quiver_core::proto::{
    LaunchTasksRequest, LaunchTasksResponse, ReleaseJobRequest, ReleaseJobResponse,
};
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::runner::TaskRunner;
use crate::store::ShuffleStore;

pub(crate) struct ExecutorControlService {
    pub(crate) runner: Arc<TaskRunner>,
    pub(crate) store: Arc<ShuffleStore>,
    /// Where its calls are counted, for `/metrics`.
    pub(crate) calls: Arc<CallCounts>,
}

#[tonic::async_trait]
impl ExecutorControl for ExecutorControlService {
    async fn launch_tasks(
        &self,
        request: Request<LaunchTasksRequest>,
    ) -> Result<Response<LaunchTasksResponse>, Status> {
        for task in request.into_inner().tasks {
            self.runner.launch(task);
        }
        let answer = Ok(Response::new(LaunchTasksResponse {}));
        self.calls.record("LaunchTasks", &answer);
        answer
    }

    async fn release_job(
        &self,
        request: Request<ReleaseJobRequest>,
    ) -> Result<Response<ReleaseJobResponse>, Status> {
        let request = request.into_inner();
        let keep = request.keep_results.then_some(request.result_stage_id);
        debug!(job = %request.job_id, ?keep, "releasing job data");
        if keep.is_none() {
            // The job failed or was cancelled: its tasks still running are wasted work.
            let stopped = self.runner.abort_job(&request.job_id);
            if stopped > 0 {
                debug!(job = %request.job_id, stopped, "stopped running tasks");
            }
        }
        self.runner.stage_plans.forget_job(&request.job_id);
        if request.failure_code != 0 {
            self.store.job_ended(
                &request.job_id,
                tonic::Code::from_i32(request.failure_code),
                &request.failure_message,
            );
        } else if keep.is_none() {
            // Released whole without failing: its client said it was done.
            self.store.job_ended(
                &request.job_id,
                tonic::Code::NotFound,
                "the query's result was released: its client said it was done with it",
            );
        }
        self.store.release_job(&request.job_id, keep);
        let answer = Ok(Response::new(ReleaseJobResponse {}));
        self.calls.record("ReleaseJob", &answer);
        answer
    }
}
