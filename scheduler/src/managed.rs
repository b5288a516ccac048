//! Managed tables: `CREATE TABLE t (...)`, `CREATE TABLE t AS ...` and their `INSERT`s
//! store Parquet files under the warehouse (`<warehouse>/<schema>/<table>/`), written by
//! the executors; the catalog holds the table as a Parquet table at that location. No
//! row of them sits in the scheduler's memory, and they persist like any other table.
//! `DROP TABLE` deletes a managed table's files (never an external table's).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::CopyTo;
use datafusion::logical_expr::{CreateExternalTable, CreateMemoryTable, LogicalPlan};
use datafusion::prelude::SessionContext;
use quiver_core::storage::StoreRegistry;
use url::Url;

use crate::locations::{directory_location, location_url};
use crate::writes::delete_all_under;

/// Where managed tables live: a directory URL ending in `/`.
#[derive(Debug, Clone)]
pub(crate) struct Warehouse {
    root: String,
}

impl Warehouse {
    /// `location` is a URL or a local path (made absolute).
    pub(crate) fn new(location: &str) -> Result<Self> {
        Ok(Self {
            root: directory_location(location)?,
        })
    }

    /// The directory of the managed table `name` (a URL ending in `/`).
    pub(crate) fn location_of(&self, name: &TableReference, context: &SessionContext) -> String {
        let state = context.state();
        let options = state.config().options();
        let resolved = name.clone().resolve(
            &options.catalog.default_catalog,
            &options.catalog.default_schema,
        );
        format!("{}{}/{}/", self.root, resolved.schema, resolved.table)
    }

    /// Whether a table at `location` is managed (its files go with it).
    pub(crate) fn holds(&self, location: &str) -> bool {
        location_url(location).is_ok_and(|url| url.as_str().starts_with(&self.root))
    }
}

/// How a managed `CREATE TABLE` is carried out.
pub(crate) struct ManagedCreate {
    /// Registers the table once its files are in place.
    pub(crate) register: CreateExternalTable,
    /// The rows to write first, as a `COPY` to the table's directory; `None` for a table
    /// created empty.
    pub(crate) write: Option<LogicalPlan>,
}

/// Turns `CREATE TABLE` into a table of files at `location` (the warehouse's place for
/// it unless the statement named one): plain Parquet, or a Delta table partitioned by
/// `delta_partitions` when that is given.
pub(crate) fn managed_create(
    create: &CreateMemoryTable,
    location: String,
    delta_partitions: Option<&[String]>,
) -> Result<ManagedCreate> {
    let schema = Arc::new(DFSchema::try_from(
        create.input.schema().as_arrow().clone(),
    )?);
    let defaults: HashMap<_, _> = create.column_defaults.iter().cloned().collect();
    let file_type = match delta_partitions {
        Some(_) => quiver_delta::DELTA,
        None => "PARQUET",
    };
    let partition_by = delta_partitions.map(<[String]>::to_vec).unwrap_or_default();
    let register =
        CreateExternalTable::builder(create.name.clone(), location.clone(), file_type, schema)
            .with_partition_cols(partition_by.clone())
            .with_constraints(create.constraints.clone())
            .with_column_defaults(defaults)
            .build();
    let empty = matches!(
        create.input.as_ref(),
        LogicalPlan::EmptyRelation(relation) if !relation.produce_one_row
    );
    let write = (!empty).then(|| {
        LogicalPlan::Copy(CopyTo::new(
            Arc::clone(&create.input),
            location,
            partition_by,
            format_as_file_type(Arc::new(ParquetFormatFactory::new())),
            HashMap::new(),
        ))
    });
    Ok(ManagedCreate { register, write })
}

/// Deletes everything under `location` (a managed table's directory).
pub(crate) async fn delete_files(location: &str, stores: &StoreRegistry) -> Result<()> {
    delete_all_under(location, stores).await
}

/// Makes an empty managed table's directory exist (local file systems list a missing
/// directory as an error).
pub(crate) fn prepare_directory(location: &str) -> Result<()> {
    if let Ok(url) = Url::parse(location)
        && url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(&path).map_err(|e| {
            DataFusionError::Execution(format!("cannot create {}: {e}", path.display()))
        })?;
    }
    Ok(())
}
