//! The Flight service clients talk to: the Flight SQL service, plus what arrow-flight's
//! Flight SQL adapter does not route — `PollFlightInfo` (submit, then watch progress) and
//! `GetSchema`.

use std::sync::Arc;

use crate::metrics::SchedulerCalls;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command, CommandPreparedStatementQuery, CommandStatementQuery};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::flight_sql::{QuiverFlightSqlService, caller};
use crate::polling::poll_token;

type Inner = QuiverFlightSqlService;

/// Quiver's Flight front door.
pub(crate) struct QuiverFlightService {
    sql: Arc<QuiverFlightSqlService>,
    /// Calls answered, by method and status code, for `/metrics`.
    calls: Arc<SchedulerCalls>,
}

impl QuiverFlightService {
    pub(crate) fn new(sql: QuiverFlightSqlService, calls: Arc<SchedulerCalls>) -> Self {
        Self {
            sql: Arc::new(sql),
            calls,
        }
    }
}

impl QuiverFlightService {
    /// Finds (or opens) the session `request` belongs to and hands it to the service in
    /// the request's extensions; returns the session cookie to set, if the client did
    /// not present it.
    fn enter_session<T>(&self, request: &mut Request<T>) -> Option<String> {
        let (session, cookie) = self.sql.sessions().resolve(request);
        request.extensions_mut().insert(session);
        cookie
    }
}

/// `response` setting the session cookie, when there is one to set.
fn with_cookie<R>(mut response: Response<R>, cookie: Option<String>) -> Response<R> {
    if let Some(value) = cookie.and_then(|c| MetadataValue::try_from(c).ok()) {
        response.metadata_mut().insert("set-cookie", value);
    }
    response
}

fn command_of(descriptor: &FlightDescriptor) -> Result<Command, Status> {
    let any = Any::decode(&*descriptor.cmd)
        .map_err(|e| Status::invalid_argument(format!("decoding the command: {e}")))?;
    Command::try_from(any).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// arrow-flight's Flight SQL dispatcher reports a request whose protobuf does not decode
/// (a known command or action wrapping garbage) as `Internal`, which means a bug of
/// ours; it is the caller's mistake.
fn undecodable_is_invalid(status: Status) -> Status {
    let message = status.message();
    let undecodable = message.starts_with("ParseError(")
        || message.contains("decode")
        || message.contains("Decode");
    if status.code() == tonic::Code::Internal && undecodable {
        Status::invalid_argument(format!("the request does not decode: {message}"))
    } else {
        status
    }
}

#[tonic::async_trait]
impl FlightService for QuiverFlightService {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        mut request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let result = async {
            let cookie = self.enter_session(&mut request);
            let response = FlightService::handshake(&*self.sql, request).await?;
            Ok(with_cookie(response, cookie))
        }
        .await;
        self.calls.flight.record("Handshake", &result);
        result
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let result = async { FlightService::list_flights(&*self.sql, request).await }.await;
        self.calls.flight.record("ListFlights", &result);
        result
    }

    async fn get_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let result = async {
            command_of(request.get_ref())?;
            let cookie = self.enter_session(&mut request);
            FlightService::get_flight_info(&*self.sql, request)
                .await
                .map(|response| with_cookie(response, cookie))
                .map_err(undecodable_is_invalid)
        }
        .await;
        self.calls.flight.record("GetFlightInfo", &result);
        result
    }

    /// Queries start in the background and the client polls with the returned
    /// descriptor; everything else is answered at once, complete.
    async fn poll_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let result = async {
            let cookie = self.enter_session(&mut request);
            let descriptor = request.get_ref().clone();
            let session = self.sql.session_of(&request);
            if let Some(token) = poll_token(&descriptor.cmd) {
                let poll = self.sql.poll(token, caller(&session)).await?;
                return Ok(with_cookie(Response::new(poll), cookie));
            }
            let poll = match command_of(&descriptor)? {
                Command::CommandStatementQuery(CommandStatementQuery { query, .. }) => {
                    self.sql
                        .submit_polled(session, query, None, descriptor)
                        .await?
                }
                Command::CommandPreparedStatementQuery(CommandPreparedStatementQuery {
                    prepared_statement_handle,
                }) => {
                    let (sql, params, _) = self
                        .sql
                        .prepared_query(&session, &prepared_statement_handle)?;
                    self.sql
                        .submit_polled(session, sql, params, descriptor)
                        .await?
                }
                _ => {
                    let info = FlightService::get_flight_info(&*self.sql, request)
                        .await?
                        .into_inner();
                    PollInfo {
                        info: Some(info),
                        flight_descriptor: None,
                        progress: Some(1.0),
                        expiration_time: None,
                    }
                }
            };
            Ok(with_cookie(Response::new(poll), cookie))
        }
        .await;
        self.calls.flight.record("PollFlightInfo", &result);
        result
    }

    /// The schema a query would return, without running it.
    async fn get_schema(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let result = async {
            let cookie = self.enter_session(&mut request);
            let session = self.sql.session_of(&request);
            let sql = match command_of(request.get_ref())? {
                Command::CommandStatementQuery(query) => query.query,
                Command::CommandPreparedStatementQuery(query) => {
                    self.sql
                        .prepared_query(&session, &query.prepared_statement_handle)?
                        .0
                }
                other => {
                    return Err(Status::invalid_argument(format!(
                        "GetSchema takes a query, not {}",
                        other.type_url()
                    )));
                }
            };
            let schema = self.sql.dataset_schema(&session, &sql).await?;
            let result =
                SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
                    .map_err(|e| Status::internal(format!("encoding schema: {e}")))?;
            Ok(with_cookie(Response::new(result), cookie))
        }
        .await;
        self.calls.flight.record("GetSchema", &result);
        result
    }

    async fn do_get(
        &self,
        mut request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let result = async {
            let cookie = self.enter_session(&mut request);
            FlightService::do_get(&*self.sql, request)
                .await
                .map(|response| with_cookie(response, cookie))
                .map_err(undecodable_is_invalid)
        }
        .await;
        self.calls.flight.record("DoGet", &result);
        result
    }

    async fn do_put(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let result = async {
            let cookie = self.enter_session(&mut request);
            FlightService::do_put(&*self.sql, request)
                .await
                .map(|response| with_cookie(response, cookie))
                .map_err(undecodable_is_invalid)
        }
        .await;
        self.calls.flight.record("DoPut", &result);
        result
    }

    async fn do_action(
        &self,
        mut request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let result = async {
            let cookie = self.enter_session(&mut request);
            FlightService::do_action(&*self.sql, request)
                .await
                .map(|response| with_cookie(response, cookie))
                .map_err(undecodable_is_invalid)
        }
        .await;
        self.calls.flight.record("DoAction", &result);
        result
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let result = async { FlightService::list_actions(&*self.sql, request).await }.await;
        self.calls.flight.record("ListActions", &result);
        result
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let result = async { FlightService::do_exchange(&*self.sql, request).await }.await;
        self.calls.flight.record("DoExchange", &result);
        result
    }
}
