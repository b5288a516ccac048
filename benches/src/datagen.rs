//! Generates TPC-H tables as Parquet with the `tpchgen` crates: one directory per table,
//! `files` Parquet files in each.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

/// The eight TPC-H tables.
pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// How to lay out generated data.
#[derive(Debug, Clone)]
pub struct DataGenOptions {
    pub scale_factor: f64,
    /// Files per table for the large tables (nation and region always get one).
    pub files_per_table: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DataGenError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("writing Parquet {path}: {source}")]
    Parquet {
        path: String,
        source: datafusion::parquet::errors::ParquetError,
    },
}

/// Writes every table under `out/<table>/part-<i>.parquet`.
pub fn generate(out: &Path, options: &DataGenOptions) -> Result<(), DataGenError> {
    for table in TABLES {
        let files = if matches!(table, "nation" | "region") {
            1
        } else {
            options.files_per_table.max(1)
        };
        let dir = out.join(table);
        std::fs::create_dir_all(&dir).map_err(|source| DataGenError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for part in 0..files {
            let path = dir.join(format!("part-{part}.parquet"));
            let batches = table_batches(table, options.scale_factor, part as i32 + 1, files as i32);
            write_parquet(&path, batches, options.row_group_rows)?;
        }
    }
    Ok(())
}

fn table_batches(table: &str, sf: f64, part: i32, parts: i32) -> Box<dyn RecordBatchIterator> {
    const BATCH: usize = 8192;
    match table {
        "nation" => {
            Box::new(NationArrow::new(NationGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        "region" => {
            Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        "part" => {
            Box::new(PartArrow::new(PartGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        "supplier" => Box::new(
            SupplierArrow::new(SupplierGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
        "partsupp" => Box::new(
            PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
        "customer" => Box::new(
            CustomerArrow::new(CustomerGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
        "orders" => {
            Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts)).with_batch_size(BATCH))
        }
        _ => Box::new(
            LineItemArrow::new(LineItemGenerator::new(sf, part, parts)).with_batch_size(BATCH),
        ),
    }
}

fn write_parquet(
    path: &Path,
    batches: Box<dyn RecordBatchIterator>,
    row_group_rows: usize,
) -> Result<(), DataGenError> {
    let shown = path.display().to_string();
    let parquet_error = |source| DataGenError::Parquet {
        path: shown.clone(),
        source,
    };
    let file = File::create(path).map_err(|source| DataGenError::Io {
        path: shown.clone(),
        source,
    })?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    let schema = batches.schema().clone();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(parquet_error)?;
    for batch in batches {
        let batch: RecordBatch = batch;
        writer.write(&batch).map_err(parquet_error)?;
    }
    writer.close().map_err(parquet_error)?;
    Ok(())
}
