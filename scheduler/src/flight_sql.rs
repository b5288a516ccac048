//! The scheduler's front door: an Arrow Flight SQL service.
//!
//! `GetFlightInfo(CommandStatementQuery)` plans and runs the statement, then answers with
//! one endpoint per result partition, each pointing at the executor that holds it; the
//! client reads them with `do_get` there.

use std::sync::Arc;

use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandStatementQuery, SqlInfo};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use quiver_core::QuiverError;
use quiver_core::proto::ShuffleTicket;
use quiver_core::ticket::encode_ticket;
use tonic::{Request, Response, Status};

use crate::session::{QueryResult, QueryService};

/// Flight SQL service over a [`QueryService`].
pub struct QuiverFlightSqlService {
    queries: Arc<QueryService>,
}

impl QuiverFlightSqlService {
    pub fn new(queries: Arc<QueryService>) -> Self {
        Self { queries }
    }
}

/// The Flight location URI of an executor whose gRPC URL is `http://host:port`.
pub fn flight_location(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("grpc+tcp://{rest}"),
        None => url.to_string(),
    }
}

fn status_of(error: &QuiverError) -> Status {
    Status::new(error.status_code(), error.to_string())
}

fn flight_info(result: &QueryResult, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
    let mut info = FlightInfo::new()
        .try_with_schema(&result.schema)
        .map_err(|e| Status::internal(format!("encoding result schema: {e}")))?
        .with_descriptor(descriptor)
        .with_ordered(result.ordered);
    for location in &result.locations {
        let ticket = ShuffleTicket {
            job_id: result.job_id.to_string(),
            stage_id: result.final_stage.0,
            map_partition: location.map_partition,
            output_partition: 0,
        };
        info = info.with_endpoint(
            FlightEndpoint::new()
                .with_ticket(Ticket::new(encode_ticket(&ticket)))
                .with_location(flight_location(&location.flight_url)),
        );
    }
    Ok(info)
}

#[tonic::async_trait]
impl FlightSqlService for QuiverFlightSqlService {
    type FlightService = QuiverFlightSqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let result = self
            .queries
            .execute(&query.query)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(flight_info(&result, request.into_inner())?))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
