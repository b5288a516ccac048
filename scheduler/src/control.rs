//! The scheduler's control service: executors register, heartbeat and report tasks here.

use std::sync::Arc;

use quiver_core::proto::scheduler_control_server::SchedulerControl;
use quiver_core::proto::{
    DrainExecutorRequest, DrainExecutorResponse, HeartbeatRequest, HeartbeatResponse,
    RegisterExecutorRequest, RegisterExecutorResponse, TaskStatus, TaskStatusAck,
};
use tonic::{Request, Response, Status};

use crate::engine::Engine;

pub(crate) struct SchedulerControlService {
    pub(crate) engine: Arc<Engine>,
}

#[tonic::async_trait]
impl SchedulerControl for SchedulerControlService {
    async fn register_executor(
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

    async fn drain_executor(
        &self,
        request: Request<DrainExecutorRequest>,
    ) -> Result<Response<DrainExecutorResponse>, Status> {
        let request = request.into_inner();
        if request.finished {
            self.engine
                .executor_lost(&request.executor_id, Some("shut down".to_string()));
        } else {
            self.engine.drain_executor(&request.executor_id);
        }
        Ok(Response::new(DrainExecutorResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let known = self.engine.heartbeat(request.get_ref());
        Ok(Response::new(HeartbeatResponse { reregister: !known }))
    }

    async fn report_task_status(
        &self,
        request: Request<TaskStatus>,
    ) -> Result<Response<TaskStatusAck>, Status> {
        self.engine.task_status(request.into_inner());
        Ok(Response::new(TaskStatusAck {}))
    }
}
