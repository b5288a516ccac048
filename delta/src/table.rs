//! [`DeltaTable`]: a Delta table as DataFusion sees it. A scan resolves the snapshot here
//! (in the scheduler) and becomes a plain Parquet scan of the snapshot's live files, with
//! partition values attached and files pruned by their statistics, so executors never
//! read the log. An insert becomes a Parquet file sink over the table's root; committing
//! its files to the log is the caller's last step ([`DeltaTable::prepare_write`]).

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::SchemaExt;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics, ToDFSchema};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::{ParquetFormat, ParquetSink};
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{
    FileGroup, FileOutputMode, FileScanConfigBuilder, FileSinkConfig,
};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::error::Result;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

use crate::commit::{PendingWrite, WriteMode};
use crate::error::DeltaError;
use crate::log::{Snapshot, VersionSpec, file_location, load_snapshot};
use crate::protocol::{check_readable, check_writable};
use crate::schema::{ViewTypes, arrow_schema};
use crate::stats::{FilesStatistics, partition_value, record_count};

/// A Delta table at its root: the latest version, or one version pinned for time travel.
#[derive(Debug)]
pub struct DeltaTable {
    url: ListingTableUrl,
    /// The location as the user gave it, for messages.
    location: String,
    version: VersionSpec,
    /// The columns in the table's order, partition columns where the table has them.
    schema: SchemaRef,
    partition_columns: Vec<String>,
    views: ViewTypes,
    definition: Option<String>,
}

impl DeltaTable {
    /// The table as of `snapshot`, read at `version` from now on.
    pub fn new(
        url: ListingTableUrl,
        location: String,
        version: VersionSpec,
        snapshot: &Snapshot,
        views: ViewTypes,
        definition: Option<String>,
    ) -> Result<Self, DeltaError> {
        let schema = table_schema(snapshot, views)?;
        Ok(Self {
            url,
            location,
            version,
            schema: Arc::new(schema),
            partition_columns: snapshot.metadata.partition_columns.clone(),
            views,
            definition,
        })
    }

    /// This table pinned to an older snapshot (time travel); its columns stay this
    /// table's, and a version with other columns is refused when it is read.
    pub fn pinned(&self, version: VersionSpec) -> Self {
        Self {
            url: self.url.clone(),
            location: self.location.clone(),
            version,
            schema: Arc::clone(&self.schema),
            partition_columns: self.partition_columns.clone(),
            views: self.views,
            definition: None,
        }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn url(&self) -> &ListingTableUrl {
        &self.url
    }

    pub fn root(&self) -> &Path {
        self.url.prefix()
    }

    fn store(&self, state: &dyn Session) -> Result<Arc<dyn ObjectStore>> {
        state.runtime_env().object_store(self.url.object_store())
    }

    /// The snapshot this table reads now, checked to be readable with this schema.
    pub async fn snapshot(&self, store: &Arc<dyn ObjectStore>) -> Result<Snapshot, DeltaError> {
        let snapshot = load_snapshot(store, self.root(), self.version, &self.location).await?;
        check_readable(&snapshot)?;
        let schema = table_schema(&snapshot, self.views)?;
        if schema.fields() != self.schema.fields() {
            let remedy = match self.version {
                VersionSpec::Latest => "register it again".to_string(),
                _ => format!(
                    "read it through a table registered at that version: CREATE EXTERNAL \
                     TABLE ... STORED AS DELTA LOCATION '{}' OPTIONS ('version' '{}')",
                    self.location, snapshot.version
                ),
            };
            return Err(DeltaError::Unsupported(format!(
                "a schema change: version {} of '{}' has columns ({}), the table was \
                 registered with ({}); {remedy}",
                snapshot.version,
                self.location,
                names(&schema),
                names(&self.schema)
            )));
        }
        Ok(snapshot)
    }

    /// Checks a write may go ahead and records what committing it will take.
    pub async fn prepare_write(
        &self,
        store: &Arc<dyn ObjectStore>,
        overwrite: bool,
    ) -> Result<PendingWrite, DeltaError> {
        self.refuse_pinned_writes()?;
        let snapshot = self.snapshot(store).await?;
        check_writable(&snapshot, overwrite)?;
        let mode = if overwrite {
            WriteMode::Overwrite
        } else {
            WriteMode::Append
        };
        Ok(PendingWrite::of(
            &snapshot,
            self.root().clone(),
            self.location.clone(),
            mode,
        ))
    }

    /// The partition columns, in the order the log lists them.
    fn refuse_pinned_writes(&self) -> Result<(), DeltaError> {
        if self.version != VersionSpec::Latest {
            return Err(DeltaError::Unsupported(format!(
                "writing through a table pinned to an older version of '{}'",
                self.location
            )));
        }
        Ok(())
    }

    fn partition_fields(&self) -> Vec<FieldRef> {
        self.partition_columns
            .iter()
            .filter_map(|name| self.schema.field_with_name(name).ok())
            .map(|field| Arc::new(field.clone()))
            .collect()
    }

    /// Where column `index` of the table is in a scan's columns (the files' columns in
    /// the table's order, then the partition columns).
    fn scan_index(&self, index: usize) -> usize {
        let name = self.schema.field(index).name();
        match self.partition_columns.iter().position(|p| p == name) {
            Some(partition) => {
                self.schema.fields().len() - self.partition_columns.len() + partition
            }
            None => self.schema.fields()[..index]
                .iter()
                .filter(|f| !self.partition_columns.contains(f.name()))
                .count(),
        }
    }

    fn parquet_format(state: &dyn Session) -> ParquetFormat {
        ParquetFormat::default().with_options(state.table_options().parquet.clone())
    }
}

fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The snapshot's columns in the table's order.
fn table_schema(snapshot: &Snapshot, views: ViewTypes) -> Result<Schema, DeltaError> {
    let schema = arrow_schema(&snapshot.metadata.schema_string, views)?;
    for column in &snapshot.metadata.partition_columns {
        if schema.field_with_name(column).is_err() {
            return Err(DeltaError::Log(format!(
                "partition column '{column}' is not in the table's schema"
            )));
        }
    }
    Ok(schema)
}

#[async_trait]
impl TableProvider for DeltaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.definition.as_deref()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune whole files; rows are still checked above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let store = self.store(state)?;
        let snapshot = self.snapshot(&store).await?;
        let mut files = snapshot.files;
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema: DFSchema = Arc::clone(&self.schema).to_dfschema()?;
            let physical = state.create_physical_expr(predicate, &df_schema)?;
            if let Ok(pruning) = PruningPredicateBuilder::new()
                .with_file_schema(Arc::clone(&self.schema))
                .try_build(physical)
            {
                let keep = pruning.prune(&FilesStatistics::new(
                    &self.schema,
                    &self.partition_columns,
                    &files,
                ));
                if let Ok(keep) = keep {
                    let mut keep = keep.into_iter();
                    files.retain(|_| keep.next().unwrap_or(true));
                }
            }
        }
        let projected = || -> Result<SchemaRef> {
            Ok(match projection {
                Some(indices) => Arc::new(self.schema.project(indices)?),
                None => Arc::clone(&self.schema),
            })
        };
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected()?)));
        }
        let partition_fields = self.partition_fields();
        let scanned = files
            .iter()
            .map(|add| {
                let location = file_location(self.root(), &add.path)?;
                let partition_values = partition_fields
                    .iter()
                    .map(|field| {
                        partition_value(add, field.name(), field.data_type()).ok_or_else(|| {
                            DeltaError::Log(format!(
                                "file {} has partition value {:?} for column '{}', not a {}",
                                add.path,
                                add.partition_values.get(field.name()),
                                field.name(),
                                field.data_type()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mut file = PartitionedFile::from(ObjectMeta {
                    location,
                    last_modified: Utc
                        .timestamp_millis_opt(add.modification_time)
                        .single()
                        .unwrap_or_default(),
                    size: add.size,
                    e_tag: None,
                    version: None,
                });
                file.partition_values = partition_values;
                Ok::<_, DeltaError>(file)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Row counts and sizes let the planner choose join sides and broadcasts, as it
        // does for Parquet tables.
        let rows: Option<usize> = files
            .iter()
            .map(|f| record_count(f).map(|n| n as usize))
            .sum();
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        // Split as DataFusion splits a Parquet table's files (the optimizer then evens
        // the groups out by byte ranges).
        let groups = FileGroup::new(scanned).split_files(state.config().target_partitions());
        let file_schema = Schema::new(
            self.schema
                .fields()
                .iter()
                .filter(|f| !self.partition_columns.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        );
        // The scan's columns come in the table's order (or the projection's).
        let scan_projection: Vec<usize> = match projection {
            Some(indices) => indices.iter().map(|i| self.scan_index(*i)).collect(),
            None => (0..self.schema.fields().len())
                .map(|i| self.scan_index(i))
                .collect(),
        };
        let scanned_schema = Schema::new(
            file_schema
                .fields()
                .iter()
                .cloned()
                .chain(partition_fields.iter().cloned())
                .collect::<Vec<_>>(),
        );
        let mut statistics = Statistics::new_unknown(&scanned_schema);
        let files_statistics = FilesStatistics::new(&self.schema, &self.partition_columns, &files);
        statistics.column_statistics = scanned_schema
            .fields()
            .iter()
            .map(|field| files_statistics.column_statistics(field))
            .collect();
        statistics.num_rows = rows.map_or(Precision::Absent, Precision::Exact);
        statistics.total_byte_size = Precision::Inexact(bytes as usize);
        let table_schema = TableSchemaBuilder::new(Arc::new(file_schema))
            .with_table_partition_cols(partition_fields)
            .build();
        let format = Self::parquet_format(state);
        let config =
            FileScanConfigBuilder::new(self.url.object_store(), format.file_source(table_schema))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(Some(scan_projection))?
                .with_limit(limit)
                .build();
        format.create_physical_plan(state, config).await
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.schema
            .logically_equivalent_names_and_types(&input.schema())?;
        // The table's protocol is checked where the write is committed
        // (`prepare_write`, before any task runs); a pinned table takes no writes.
        self.refuse_pinned_writes()?;
        let partition_columns: Vec<(String, DataType)> = self
            .partition_fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let config = FileSinkConfig {
            original_url: self.url.as_str().to_string(),
            object_store_url: self.url.object_store(),
            file_group: FileGroup::default(),
            table_paths: vec![self.url.clone()],
            output_schema: Arc::clone(&self.schema),
            table_partition_cols: partition_columns,
            // What the write replaces is decided at commit, in the log: files are only added.
            insert_op: InsertOp::Append,
            keep_partition_by_columns: false,
            file_extension: "parquet".to_string(),
            file_output_mode: FileOutputMode::Directory,
        };
        let sink = ParquetSink::new(config, state.table_options().parquet.clone());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Whether `table` is a Delta table: the planner must commit writes into it to the log.
pub fn is_delta(table: &dyn TableProvider) -> bool {
    let table: &dyn Any = table;
    table.is::<DeltaTable>()
}
