//! The scheduler's control service: executors register, heartbeat and report tasks here.

use std::sync::Arc;

use quiver_core::proto::scheduler_control_server::SchedulerControl;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use quiver_core::proto::{
    AttachEvent, AttachRequest, DrainExecutorRequest, DrainExecutorResponse, HeartbeatRequest,
    HeartbeatResponse, RegisterExecutorRequest, RegisterExecutorResponse, StagePlanRequest,
    StagePlanResponse, TaskStatus, TaskStatusAck,
};
use tonic::{Request, Response, Status};

use crate::engine::Engine;

pub(crate) struct SchedulerControlService {
    pub(crate) engine: Arc<Engine>,
    /// Where its calls are counted, for `/metrics`.
    pub(crate) calls: Arc<crate::metrics::SchedulerCalls>,
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<AttachEvent, Status>> + Send>>;

/// The (silent) stream an attached executor holds; dropping it — the connection closed,
/// or the scheduler stopped — tells the engine.
struct Attachment {
    engine: Arc<Engine>,
    executor_id: String,
    number: u64,
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Stream for Attachment {
    type Item = Result<AttachEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Ends only when the scheduler stops; until then the executor's connection keeps
        // it open.
        self.stopped.as_mut().poll(cx).map(|_| None)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.engine.detached(&self.executor_id, self.number);
    }
}

#[tonic::async_trait]
impl SchedulerControl for SchedulerControlService {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let result = self.answer_attach(request).await;
        self.calls.control.record("Attach", &result);
        result
    }

    async fn register_executor(
        &self,
        request: Request<RegisterExecutorRequest>,
    ) -> Result<Response<RegisterExecutorResponse>, Status> {
        let result = self.answer_register_executor(request).await;
        self.calls.control.record("RegisterExecutor", &result);
        result
    }

    async fn drain_executor(
        &self,
        request: Request<DrainExecutorRequest>,
    ) -> Result<Response<DrainExecutorResponse>, Status> {
        let result = self.answer_drain_executor(request).await;
        self.calls.control.record("DrainExecutor", &result);
        result
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let result = self.answer_heartbeat(request).await;
        self.calls.control.record("Heartbeat", &result);
        result
    }

    async fn report_task_status(
        &self,
        request: Request<TaskStatus>,
    ) -> Result<Response<TaskStatusAck>, Status> {
        let result = self.answer_report_task_status(request).await;
        self.calls.control.record("ReportTaskStatus", &result);
        result
    }

    async fn get_stage_plan(
        &self,
        request: Request<StagePlanRequest>,
    ) -> Result<Response<StagePlanResponse>, Status> {
        let request = request.into_inner();
        let result = self
            .engine
            .stage_plan(&request.job_id, request.stage_id, request.plan_id)
            .map(|plan| {
                Response::new(StagePlanResponse {
                    plan: plan.to_vec(),
                })
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no plan {} for stage {} of job {}: the job has ended or the stage was \
                     planned anew",
                    request.plan_id, request.stage_id, request.job_id
                ))
            });
        self.calls.control.record("GetStagePlan", &result);
        result
    }
}

/// The answers, each counted by the trait's methods above.
impl SchedulerControlService {
    async fn answer_attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachStream>, Status> {
        let executor_id = request.into_inner().executor_id;
        let number = self.engine.attach(&executor_id).ok_or_else(|| {
            Status::not_found(format!("executor {executor_id} is not registered"))
        })?;
        let engine = Arc::clone(&self.engine);
        let stopped = Box::pin(async move { engine.stopped().await });
        Ok(Response::new(Box::pin(Attachment {
            engine: Arc::clone(&self.engine),
            executor_id,
            number,
            stopped,
        })))
    }

    async fn answer_register_executor(
        &self,
        request: Request<RegisterExecutorRequest>,
    ) -> Result<Response<RegisterExecutorResponse>, Status> {
        let registration = request
            .into_inner()
            .executor
            .ok_or_else(|| Status::invalid_argument("registration without executor details"))?;
        if registration.slots == 0 {
            return Err(Status::invalid_argument(
                "an executor needs at least one slot",
            ));
        }
        self.engine.register_executor(registration)?;
        Ok(Response::new(RegisterExecutorResponse {
            heartbeat_interval_ms: self.engine.config().heartbeat_interval.as_millis() as u64,
            ticket_key: self.engine.ticket_key().as_bytes().to_vec(),
        }))
    }

    async fn answer_drain_executor(
        &self,
        request: Request<DrainExecutorRequest>,
    ) -> Result<Response<DrainExecutorResponse>, Status> {
        let request = request.into_inner();
        if request.finished {
            self.engine.executor_left(&request.executor_id);
        } else {
            self.engine.drain_executor(&request.executor_id);
        }
        Ok(Response::new(DrainExecutorResponse {}))
    }

    async fn answer_heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(self.engine.heartbeat(request.get_ref())))
    }

    async fn answer_report_task_status(
        &self,
        request: Request<TaskStatus>,
    ) -> Result<Response<TaskStatusAck>, Status> {
        self.engine.task_status(request.into_inner());
        Ok(Response::new(TaskStatusAck {}))
    }
}
