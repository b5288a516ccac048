//! Embedding Quiver: start a standalone cluster in this process, register a Parquet table,
//! run SQL, print the batches, shut down.
//!
//! Run from the repository root: `cargo run --release -p quiver --example embedded`.

use quiver::arrow::util::pretty::print_batches;
use quiver::{StandaloneCluster, StandaloneConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = StandaloneCluster::start(StandaloneConfig::default()).await?;
    let client = cluster.client().await?;
    client
        .register_parquet("nation", "testdata/tpch/sf0.01/nation/")
        .await?;
    client
        .register_parquet("region", "testdata/tpch/sf0.01/region/")
        .await?;
    let batches = client
        .sql(
            "SELECT r_name, count(*) AS nations FROM nation JOIN region \
             ON n_regionkey = r_regionkey GROUP BY r_name ORDER BY r_name",
        )
        .await?;
    print_batches(&batches)?;
    cluster.shutdown().await;
    Ok(())
}
