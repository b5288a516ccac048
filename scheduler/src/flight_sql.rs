//! The scheduler's front door: an Arrow Flight SQL service.
//!
//! Queries (`CommandStatementQuery`, prepared statements) are planned and run on the
//! executors; the answer has one endpoint per result partition, each pointing at the
//! executor that holds it with a signed ticket. Catalog metadata, updates and prepared
//! statement handling are answered by the scheduler itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use quiver_core::proto::{QueryProgress, ShuffleTicket};
use quiver_core::ticket::{TicketKey, decode_ticket, encode_ticket};
use quiver_core::{JobId, QuiverError};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{AuthenticatedUser, Authenticator};
use crate::client_session::{ClientSession, Sessions};
use crate::engine::JobProgress;
use crate::held_results::HELD_RESULT_TYPE;
use crate::job::JobOwner;
use crate::metadata;
use crate::params::parameter_rows;
use crate::planning::ReusablePlan;
use crate::polling::{PendingQueries, PollState, poll_command, poll_token};
use crate::prepared::PreparedStatements;
use crate::session::{QueryResult, QueryService};
use crate::session_options::answer_session_action;

type FlightDataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// How long one `PollFlightInfo` call waits for the query to finish before answering
/// with its progress.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Flight SQL service over a [`QueryService`].
pub struct QuiverFlightSqlService {
    queries: Arc<QueryService>,
    auth: Arc<Authenticator>,
    prepared: PreparedStatements,
    pending: PendingQueries,
}

impl QuiverFlightSqlService {
    pub fn new(queries: Arc<QueryService>, auth: Arc<Authenticator>) -> Self {
        Self {
            queries,
            auth,
            prepared: PreparedStatements::default(),
            pending: PendingQueries::default(),
        }
    }

    /// The session the front door found for `request`; calls that reach this service
    /// another way (tests) run in the process's local session.
    pub(crate) fn session_of<T>(&self, request: &Request<T>) -> Arc<ClientSession> {
        request
            .extensions()
            .get::<Arc<ClientSession>>()
            .cloned()
            .unwrap_or_else(|| self.queries.local_session())
    }

    /// Every client session.
    pub(crate) fn sessions(&self) -> &Sessions {
        self.queries.sessions()
    }

    fn ticket_key(&self) -> &TicketKey {
        self.queries.engine().ticket_key()
    }

    /// Runs `sql` to completion; the answer says where each result partition is.
    async fn run_query(
        &self,
        session: &ClientSession,
        sql: &str,
        params: Option<ParamValues>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let result = self
            .queries
            .execute_as(session, JobId::new_random(), sql, params)
            .await
            .map_err(|e| status_of(&e))?;
        result_info(
            &result,
            descriptor,
            self.ticket_key(),
            &self.queries,
            session,
        )
    }

    /// Starts `sql` in the background for a polling client; answers with its first
    /// progress report (or its result, if it finished quickly).
    pub async fn submit_polled(
        &self,
        session: Arc<ClientSession>,
        sql: String,
        params: Option<ParamValues>,
        descriptor: FlightDescriptor,
    ) -> Result<arrow_flight::PollInfo, Status> {
        let job_id = JobId::new_random();
        let queries = Arc::clone(&self.queries);
        let key = self.ticket_key().clone();
        let run_job = job_id.clone();
        let owner = session.id().to_string();
        let token = self.pending.submit(job_id, &owner, async move {
            let result = queries
                .execute_as(&session, run_job, &sql, params)
                .await
                .map_err(|e| status_of(&e))?;
            result_info(&result, descriptor, &key, &queries, &session)
        });
        self.poll(&token, Some(owner.as_str())).await
    }

    /// The next progress report of a polled query, or its result.
    pub async fn poll(
        &self,
        token: &str,
        session: Option<&str>,
    ) -> Result<arrow_flight::PollInfo, Status> {
        let state = self
            .pending
            .poll(token, session, POLL_WAIT)
            .await
            .ok_or_else(|| {
                Status::not_found(
                    "no running query has this poll descriptor: it finished and its result was \
                 already returned, it was cancelled, or the scheduler restarted",
                )
            })?;
        match state {
            PollState::Finished(outcome) => Ok(arrow_flight::PollInfo {
                info: Some(outcome?),
                flight_descriptor: None,
                progress: Some(1.0),
                expiration_time: None,
            }),
            PollState::Running(job_id) => {
                let progress = self.queries.engine().progress(&job_id).unwrap_or_default();
                let descriptor = FlightDescriptor::new_cmd(poll_command(token));
                let mut report = progress_report(&job_id, &progress, None);
                report.queue_position = self.queries.queue_position(&job_id).unwrap_or(0) as u32;
                let partial = FlightInfo::new()
                    .with_descriptor(descriptor.clone())
                    .with_app_metadata(report.encode_to_vec());
                Ok(arrow_flight::PollInfo {
                    info: Some(partial),
                    flight_descriptor: Some(descriptor),
                    progress: Some(progress.fraction().min(0.99)),
                    expiration_time: None,
                })
            }
        }
    }

    /// The schema `sql` returns.
    pub async fn dataset_schema(
        &self,
        session: &ClientSession,
        sql: &str,
    ) -> Result<Schema, Status> {
        let (shape, _) = self
            .queries
            .prepare(session, sql)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(shape.dataset_schema.as_ref().clone())
    }

    /// A prepared statement's SQL and bound parameters.
    pub(crate) fn prepared_query(
        &self,
        session: &ClientSession,
        handle: &[u8],
    ) -> Result<(String, Option<ParamValues>, Option<ReusablePlan>), Status> {
        let statement = self
            .prepared
            .get(handle, session.id())
            .ok_or_else(|| Status::not_found("unknown or closed prepared statement handle"))?;
        if statement.params.len() > 1 {
            return Err(Status::invalid_argument(
                "a prepared query runs with one row of parameters; more were bound",
            ));
        }
        Ok((
            statement.sql,
            statement.params.into_iter().next(),
            statement.plan,
        ))
    }

    /// Stops the query a FlightInfo describes (or drops its finished result).
    fn cancel(&self, session: &ClientSession, info: &FlightInfo) -> Result<(), Status> {
        let polled = info
            .flight_descriptor
            .as_ref()
            .and_then(|d| poll_token(&d.cmd));
        if let Some(token) = polled {
            let job_id = self.pending.cancel(token, caller(session)).ok_or_else(|| {
                Status::not_found("no running query has this descriptor (already finished?)")
            })?;
            self.queries.engine().release(&job_id);
            self.queries.held().forget(&job_id.to_string());
            return Ok(());
        }
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.as_ref())
            .ok_or_else(|| Status::invalid_argument("the FlightInfo names no query"))?;
        if let Ok(held) = Any::decode(ticket.ticket.clone())
            && held.type_url == HELD_RESULT_TYPE
        {
            let job_id = String::from_utf8_lossy(&held.value);
            return match self
                .queries
                .held()
                .take(&job_id, session.id(), session.user())
            {
                Some(_) => Ok(()),
                None => Err(Status::not_found(
                    "no query of this session has this ticket (already read?)",
                )),
            };
        }
        let ticket = decode_ticket(&ticket.ticket, self.ticket_key())?;
        let job_id = JobId::from(ticket.job_id.as_str());
        let engine = self.queries.engine();
        // Another session's query is answered as an unknown one: nothing is learned.
        match engine.owner_of(&job_id) {
            Some(owner) if session.is_admin() || owner.admits(session.id(), session.user()) => {
                engine.release(&job_id);
                Ok(())
            }
            _ => Err(Status::not_found(
                "no query of this session has this ticket (already finished?)",
            )),
        }
    }
}

/// Whose pending queries `session` may reach: its own, or any for an administrator.
pub(crate) fn caller(session: &ClientSession) -> Option<&str> {
    (!session.is_admin()).then(|| session.id())
}

fn status_of(error: &QuiverError) -> Status {
    Status::new(error.status_code(), error.to_string())
}

/// The Flight location URI of an executor whose gRPC URL is `http://host:port`.
pub fn flight_location(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("grpc+tcp://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("grpc+tls://{rest}")
    } else {
        url.to_string()
    }
}

fn progress_report(
    job_id: &JobId,
    progress: &JobProgress,
    result: Option<&QueryResult>,
) -> QueryProgress {
    QueryProgress {
        stages_total: progress.stages_total as u32,
        stages_done: progress.stages_done as u32,
        tasks_total: progress.tasks_total as u32,
        tasks_done: progress.tasks_done as u32,
        tasks_running: progress.tasks_running as u32,
        rows: progress.rows,
        bytes: progress.bytes,
        planning_us: result.map_or(0, |r| r.planning_time.as_micros() as u64),
        elapsed_us: result.map_or(0, |r| r.total_time.as_micros() as u64),
        finished: progress.finished,
        job_id: job_id.to_string(),
        queue_position: 0,
    }
}

/// Where a finished query's result is: one endpoint per partition, at its executor.
fn result_info(
    result: &QueryResult,
    descriptor: FlightDescriptor,
    key: &TicketKey,
    queries: &QueryService,
    session: &ClientSession,
) -> Result<FlightInfo, Status> {
    if let Some(rows) = &result.rows {
        return held_info(result, rows, descriptor, queries, session);
    }
    let progress = queries
        .engine()
        .progress(&result.job_id)
        .unwrap_or_default();
    let report = progress_report(&result.job_id, &progress, Some(result));
    let mut info = FlightInfo::new()
        .try_with_schema(&result.schema)
        .map_err(|e| Status::internal(format!("encoding result schema: {e}")))?
        .with_descriptor(descriptor)
        .with_ordered(result.ordered)
        .with_app_metadata(report.encode_to_vec());
    // The tickets expire with the result.
    let retention = queries.engine().config().result_retention;
    let expires_at_ms = quiver_core::ticket::now_ms() + retention.as_millis() as u64;
    let expiration = prost_types::Timestamp {
        seconds: (expires_at_ms / 1000) as i64,
        nanos: ((expires_at_ms % 1000) * 1_000_000) as i32,
    };
    for location in &result.locations {
        let ticket = ShuffleTicket {
            job_id: result.job_id.to_string(),
            stage_id: result.final_stage.0,
            map_partition: location.map_partition,
            output_partition: 0,
            expires_at_ms,
        };
        info = info.with_endpoint(
            FlightEndpoint::new()
                .with_ticket(Ticket::new(encode_ticket(&ticket, key)))
                .with_location(flight_location(&location.flight_url))
                .with_expiration_time(expiration),
        );
    }
    Ok(info)
}

/// The FlightInfo of a result the scheduler computed: one endpoint, no location (read it
/// here), whose ticket names the result among those held.
fn held_info(
    result: &QueryResult,
    rows: &[RecordBatch],
    descriptor: FlightDescriptor,
    queries: &QueryService,
    session: &ClientSession,
) -> Result<FlightInfo, Status> {
    let job_id = result.job_id.to_string();
    let owner = JobOwner {
        user: session.user().map(str::to_string),
        session: session.id().to_string(),
    };
    queries
        .held()
        .hold(&job_id, Arc::clone(&result.schema), rows.to_vec(), owner);
    let ticket = Any {
        type_url: HELD_RESULT_TYPE.to_string(),
        value: job_id.into_bytes().into(),
    };
    Ok(FlightInfo::new()
        .try_with_schema(&result.schema)
        .map_err(|e| Status::internal(format!("encoding result schema: {e}")))?
        .with_descriptor(descriptor)
        .with_ordered(result.ordered)
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec())))
        .with_total_records(rows.iter().map(|b| b.num_rows() as i64).sum()))
}

/// A FlightInfo for data the scheduler answers itself: one endpoint, no location (read
/// it here), whose ticket is the command.
fn local_info<C: ProstMessageExt>(
    command: &C,
    batch: &RecordBatch,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(batch.schema().as_ref())
        .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
        .with_descriptor(descriptor)
        .with_endpoint(
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec())),
        )
        .with_total_records(batch.num_rows() as i64))
}

fn batch_stream(batch: RecordBatch) -> Response<FlightDataStream> {
    batches_stream(batch.schema(), vec![batch])
}

/// `batches` (of `schema`, which is sent even when there are none) as a DoGet answer.
fn batches_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<FlightDataStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(
            batches.into_iter().map(Ok::<_, FlightError>),
        ))
        .map_err(Status::from);
    Response::new(stream.boxed())
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            Status::internal(format!("encoding schema: {e}"))
        })?;
    Ok(bytes)
}

/// The record batches a client sent with `DoPut` (parameter rows).
async fn received_batches(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<RecordBatch>, Status> {
    // A client may send only the descriptor (no schema, no rows): nothing to decode.
    let flight_data = request
        .into_inner()
        .try_filter(|data| futures::future::ready(!data.data_header.is_empty()))
        .map_err(|status| FlightError::Tonic(Box::new(status)));
    arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight_data)
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("reading parameters: {e}")))
}

async fn parameters(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<ParamValues>, Status> {
    let mut rows = Vec::new();
    for batch in received_batches(request).await? {
        rows.extend(parameter_rows(&batch)?);
    }
    Ok(rows)
}

#[tonic::async_trait]
impl FlightSqlService for QuiverFlightSqlService {
    type FlightService = QuiverFlightSqlService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let user = request.extensions().get::<AuthenticatedUser>().cloned();
        let token = match (self.auth.required(), user) {
            (false, _) => String::new(),
            (true, Some(AuthenticatedUser(user))) => self.auth.issue_token(&user),
            (true, None) => {
                return Err(Status::unauthenticated(
                    "log in with basic auth (user name and password) in the handshake",
                ));
            }
        };
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(futures::stream::iter([Ok(reply)]).boxed());
        if !token.is_empty() {
            let header = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("token is not valid header text"))?;
            response.metadata_mut().insert("authorization", header);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session_of(&request);
        let info = self
            .run_query(&session, &query.query, None, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session_of(&request);
        let (sql, params, plan) =
            self.prepared_query(&session, &query.prepared_statement_handle)?;
        let result = self
            .queries
            .execute_prepared_as(&session, JobId::new_random(), &sql, params, plan)
            .await
            .map_err(|e| status_of(&e))?;
        let info = result_info(
            &result,
            request.into_inner(),
            self.ticket_key(),
            &self.queries,
            &session,
        )?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::catalogs(self.session_of(&request).context(), query)?;
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::schemas(self.session_of(&request).context(), query.clone())?;
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::tables(self.session_of(&request).context(), query.clone()).await?;
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::table_types(query)?;
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::sql_info(query.clone())?;
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::primary_keys();
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::foreign_keys();
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::foreign_keys();
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::foreign_keys();
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batch = metadata::xdbc_types(query)?;
        Ok(Response::new(local_info(
            &query,
            &batch,
            request.into_inner(),
        )?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::catalogs(
            self.session_of(&request).context(),
            query,
        )?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::schemas(
            self.session_of(&request).context(),
            query,
        )?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(
            metadata::tables(self.session_of(&request).context(), query).await?,
        ))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::table_types(query)?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let batch = metadata::sql_info(query)?;
        Ok(batch_stream(batch))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::primary_keys()))
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::foreign_keys()))
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::foreign_keys()))
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        Ok(batch_stream(metadata::foreign_keys()))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let batch = metadata::xdbc_types(query)?;
        Ok(batch_stream(batch))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<FlightDataStream>, Status> {
        if message.type_url == HELD_RESULT_TYPE {
            let session = self.session_of(&request);
            let job_id = String::from_utf8_lossy(&message.value).into_owned();
            let (schema, batches) = self
                .queries
                .held()
                .take(&job_id, session.id(), session.user())
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "the result of query {job_id} was not found: it was read already, its \
                         retention time ended, or it belongs to another session"
                    ))
                })?;
            return Ok(batches_stream(schema, batches));
        }
        Err(Status::invalid_argument(
            "this ticket is not one the scheduler serves: query results are read from the \
             executor named in the endpoint's location",
        ))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session_of(&request);
        self.queries
            .execute_update(&session, &command.query, None)
            .await
            .map_err(|e| status_of(&e))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = self.session_of(&request);
        let params = parameters(request).await?;
        if !self
            .prepared
            .bind(&query.prepared_statement_handle, session.id(), params)
        {
            return Err(Status::not_found(
                "unknown or closed prepared statement handle",
            ));
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session_of(&request);
        let statement = self
            .prepared
            .get(&query.prepared_statement_handle, session.id())
            .ok_or_else(|| Status::not_found("unknown or closed prepared statement handle"))?;
        let mut rows = parameters(request).await?;
        if rows.is_empty() {
            rows = statement.params.clone();
        }
        let runs: Vec<Option<ParamValues>> = if rows.is_empty() {
            vec![None]
        } else {
            rows.into_iter().map(Some).collect()
        };
        let mut changed = 0;
        for params in runs {
            changed += self
                .queries
                .execute_update(&session, &statement.sql, params)
                .await
                .map_err(|e| status_of(&e))?;
        }
        Ok(changed)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.session_of(&request);
        let (shape, plan) = self
            .queries
            .prepare(&session, &query.query)
            .await
            .map_err(|e| status_of(&e))?;
        let sessions = self.queries.sessions();
        let handle = self
            .prepared
            .create(&query.query, plan, session.id(), |id| sessions.is_open(id));
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_bytes(&shape.dataset_schema)?,
            parameter_schema: schema_bytes(&shape.parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = self.session_of(&request);
        self.prepared
            .close(&query.prepared_statement_handle, session.id());
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let session = self.session_of(&request);
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("decoding FlightInfo: {e}")))?;
        self.cancel(&session, &info)?;
        // arrow-flight does not export the `CancelResult` enum; 1 is CANCEL_RESULT_CANCELLED.
        const CANCEL_RESULT_CANCELLED: i32 = 1;
        Ok(ActionCancelQueryResult {
            result: CANCEL_RESULT_CANCELLED,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoActionStream>,
        Status,
    > {
        let session = self.session_of(&request);
        let action = request.into_inner();
        if let Some(answer) = answer_session_action(&self.queries, &session, &action).await {
            let body = arrow_flight::Result {
                body: answer?.into(),
            };
            return Ok(Response::new(futures::stream::iter([Ok(body)]).boxed()));
        }
        if action.r#type != "CancelFlightInfo" {
            return Err(Status::invalid_argument(format!(
                "unknown action `{}`",
                action.r#type
            )));
        }
        let request = CancelFlightInfoRequest::decode(action.body)
            .map_err(|e| Status::invalid_argument(format!("decoding CancelFlightInfo: {e}")))?;
        let info = request
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
        self.cancel(&session, &info)?;
        let result = CancelFlightInfoResult {
            status: CancelStatus::Cancelled as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(body)]).boxed()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
