//! Random and truncated bytes at the Flight and Flight SQL front door and at an
//! executor's Flight service: every call is refused with a status that says the request
//! was bad, never a panic (`Internal`, `Unknown`) or a dropped connection, and the cluster
//! serves the next query. The generator is seeded; a failure prints the seed and the call.

use arrow_flight::sql::{Any, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use bytes::Bytes;
use prost::Message;
use quiver::compare::canonical_rows;
use tonic::transport::Endpoint;

use crate::common::start_tpch_cluster;

/// A small deterministic generator (xorshift64*), so every run throws the same bytes.
struct Bytes64(u64);

impl Bytes64 {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, max_len: usize) -> Bytes {
        let len = (self.next() as usize) % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const SEED: u64 = 0x005E_ED0F_FA11;
const ROUNDS: usize = 150;

fn acceptable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound
            | tonic::Code::Unimplemented
            | tonic::Code::Unauthenticated
    )
}

fn check(call: &str, round: usize, result: Result<(), arrow_flight::error::FlightError>) {
    if let Err(arrow_flight::error::FlightError::Tonic(status)) = &result {
        assert!(
            acceptable(status.code()),
            "seed {SEED:#x} round {round}: {call} got {:?}: {}",
            status.code(),
            status.message()
        );
    }
    // Anything else the server accepted is fine (random bytes can be a valid message),
    // as long as it did not fail in some other way.
    if let Err(other) = &result
        && !matches!(other, arrow_flight::error::FlightError::Tonic(_))
    {
        panic!("seed {SEED:#x} round {round}: {call} failed oddly: {other}");
    }
}

async fn client(url: &str) -> FlightClient {
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("reachable");
    FlightClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_at_every_flight_door_is_refused_and_the_cluster_serves_on() {
    let (cluster, quiver) = start_tpch_cluster().await;
    let mut scheduler = client(&cluster.url()).await;
    let executor_url = format!("http://{}", cluster.executors()[0].address());
    let mut executor = client(&executor_url).await;
    let mut random = Bytes64(SEED);
    let valid = CommandStatementQuery {
        query: "SELECT n_name FROM nation".to_string(),
        transaction_id: None,
    }
    .as_any()
    .encode_to_vec();

    for round in 0..ROUNDS {
        let garbage = random.bytes(256);
        let cut = (random.next() as usize) % valid.len();
        let truncated = Bytes::copy_from_slice(&valid[..cut]);
        // A valid Any wrapper around garbage: the command type is known, its body is not.
        let wrapped = Any {
            type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
                .to_string(),
            value: garbage.clone(),
        }
        .encode_to_vec();
        for (what, command) in [
            ("garbage command", garbage.clone()),
            ("truncated command", truncated),
            ("garbage inside a known command", Bytes::from(wrapped)),
        ] {
            let descriptor = FlightDescriptor::new_cmd(command.clone());
            let info = scheduler
                .get_flight_info(descriptor.clone())
                .await
                .map(|_| ());
            check(&format!("GetFlightInfo({what})"), round, info);
            let schema = scheduler.get_schema(descriptor.clone()).await.map(|_| ());
            check(&format!("GetSchema({what})"), round, schema);
            let read = match scheduler.do_get(Ticket::new(command.clone())).await {
                Ok(stream) => futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                    .await
                    .map(|_| ()),
                Err(error) => Err(error),
            };
            check(&format!("DoGet({what}) on the scheduler"), round, read);
        }
        let action_type = [
            "CancelQuery",
            "ClosePreparedStatement",
            "CreatePreparedStatement",
            "CancelFlightInfo",
            "no such action",
        ][(random.next() as usize) % 5];
        let action = match scheduler
            .do_action(Action::new(action_type, garbage.clone()))
            .await
        {
            Ok(stream) => futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                .await
                .map(|_| ()),
            Err(error) => Err(error),
        };
        check(&format!("DoAction({action_type})"), round, action);
        let shuffle = match executor.do_get(Ticket::new(garbage)).await {
            Ok(stream) => futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                .await
                .map(|_| ()),
            Err(error) => Err(error),
        };
        check("DoGet on an executor", round, shuffle);
    }

    let answer = quiver
        .sql("SELECT count(*) FROM nation")
        .await
        .expect("the cluster still serves");
    assert_eq!(canonical_rows(&answer, false).unwrap(), vec!["25"]);
    cluster.shutdown().await;
}
