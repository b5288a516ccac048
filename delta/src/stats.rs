//! File statistics: written into each `add` action from the new file's Parquet footer, and
//! read back (with partition values) to skip whole files a query's filters rule out.
//!
//! Only statistics that are exact bounds are used: integers, dates, decimals up to 15
//! digits and strings up to 32 characters. Writers truncate longer strings and
//! timestamps to milliseconds, so their bounds could exclude real rows.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::Field;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, ScalarValue};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use serde_json::{Map, Value};

use crate::error::DeltaError;
use crate::log::AddFile;

const LONGEST_STRING_BOUND: usize = 32;

/// Whether bounds of a column of this type are kept and trusted.
fn bounded_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Date32
        | DataType::Utf8
        | DataType::Utf8View
        | DataType::LargeUtf8 => true,
        DataType::Decimal128(precision, _) => *precision <= 15,
        _ => false,
    }
}

/// The Delta statistics of a Parquet file just written (`numRecords`, `nullCount`,
/// `minValues`, `maxValues`), as JSON text, and its row count.
pub async fn file_stats(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> Result<(u64, String), DeltaError> {
    let object = ObjectMeta {
        location: path.clone(),
        last_modified: Default::default(),
        size,
        e_tag: None,
        version: None,
    };
    let metadata = DFParquetMetadata::new(store.as_ref(), &object)
        .fetch_metadata()
        .await?;
    let file = metadata.file_metadata();
    let arrow_schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| DeltaError::Log(format!("reading the footer of {path}: {e}")))?;
    let arrow_schema = &arrow_schema;
    let rows = metadata.file_metadata().num_rows().max(0) as u64;
    let mut nulls = Map::new();
    let mut mins = Map::new();
    let mut maxes = Map::new();
    for field in arrow_schema.fields() {
        let Ok(converter) =
            StatisticsConverter::try_new(field.name(), arrow_schema, file.schema_descr())
        else {
            continue;
        };
        if let Ok(counts) = converter.row_group_null_counts(metadata.row_groups())
            && counts.null_count() == 0
        {
            let total: u64 = counts.values().iter().sum();
            nulls.insert(field.name().clone(), Value::from(total));
        }
        if !bounded_type(field.data_type()) {
            continue;
        }
        let bound = |array: datafusion::parquet::errors::Result<ArrayRef>, want_min: bool| {
            array.ok().and_then(|array| extreme(&array, want_min))
        };
        if let (Some(min), Some(max)) = (
            bound(converter.row_group_mins(metadata.row_groups()), true),
            bound(converter.row_group_maxes(metadata.row_groups()), false),
        ) && let (Some(min), Some(max)) = (json_bound(&min), json_bound(&max))
        {
            mins.insert(field.name().clone(), min);
            maxes.insert(field.name().clone(), max);
        }
    }
    let stats = serde_json::json!({
        "numRecords": rows,
        "nullCount": nulls,
        "minValues": mins,
        "maxValues": maxes,
    });
    Ok((rows, stats.to_string()))
}

/// The least (or greatest) of per-row-group bounds; none if any row group lacks one.
fn extreme(array: &ArrayRef, want_min: bool) -> Option<ScalarValue> {
    if array.is_empty() || array.null_count() > 0 {
        return None;
    }
    let mut best = ScalarValue::try_from_array(array, 0).ok()?;
    for index in 1..array.len() {
        let value = ScalarValue::try_from_array(array, index).ok()?;
        let better = match value.partial_cmp(&best)? {
            std::cmp::Ordering::Less => want_min,
            std::cmp::Ordering::Greater => !want_min,
            std::cmp::Ordering::Equal => false,
        };
        if better {
            best = value;
        }
    }
    Some(best)
}

fn json_bound(value: &ScalarValue) -> Option<Value> {
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)) => {
            (text.chars().count() <= LONGEST_STRING_BOUND).then(|| Value::String(text.clone()))
        }
        ScalarValue::Date32(Some(_)) => Some(Value::String(value.to_string())),
        ScalarValue::Decimal128(Some(_), _, _) => serde_json::from_str(&value.to_string()).ok(),
        other if other.data_type().is_integer() && !other.is_null() => {
            serde_json::from_str(&other.to_string()).ok()
        }
        _ => None,
    }
}

/// The bound a log's statistic gives a column of `data_type`, if it is one to trust.
fn parse_bound(value: &Value, data_type: &DataType) -> Option<ScalarValue> {
    if !bounded_type(data_type) {
        return None;
    }
    let text = match value {
        Value::String(text) => {
            if text.chars().count() > LONGEST_STRING_BOUND {
                return None;
            }
            text.clone()
        }
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    ScalarValue::Utf8(Some(text)).cast_to(data_type).ok()
}

/// The rows the log says a file holds, when its writer kept statistics.
pub(crate) fn record_count(file: &AddFile) -> Option<u64> {
    let stats: Value = serde_json::from_str(file.stats.as_deref()?).ok()?;
    stats.get("numRecords").and_then(Value::as_u64)
}

/// Statistics of a snapshot's files, for DataFusion's pruning predicates.
pub(crate) struct FilesStatistics<'a> {
    schema: &'a Schema,
    partition_columns: &'a [String],
    files: &'a [AddFile],
    stats: Vec<Option<Value>>,
}

impl<'a> FilesStatistics<'a> {
    pub(crate) fn new(
        schema: &'a Schema,
        partition_columns: &'a [String],
        files: &'a [AddFile],
    ) -> Self {
        let stats = files
            .iter()
            .map(|file| {
                file.stats
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
            })
            .collect();
        Self {
            schema,
            partition_columns,
            files,
            stats,
        }
    }

    fn bounds(&self, column: &Column, key: &str) -> Option<ArrayRef> {
        let data_type = self.schema.field_with_name(&column.name).ok()?.data_type();
        let values: Vec<ScalarValue> = if self.partition_columns.contains(&column.name) {
            self.files
                .iter()
                .map(|file| partition_value(file, &column.name, data_type))
                .collect::<Option<_>>()?
        } else {
            let null = ScalarValue::try_from(data_type).ok()?;
            self.stats
                .iter()
                .map(|stats| {
                    stats
                        .as_ref()
                        .and_then(|s| s.get(key))
                        .and_then(|bounds| bounds.get(&column.name))
                        .and_then(|value| parse_bound(value, data_type))
                        .unwrap_or_else(|| null.clone())
                })
                .collect()
        };
        ScalarValue::iter_to_array(values).ok()
    }

    fn counts(&self, read: impl Fn(&Value) -> Option<u64>) -> Option<ArrayRef> {
        let counts: UInt64Array = self
            .stats
            .iter()
            .map(|stats| stats.as_ref().and_then(&read))
            .collect();
        Some(Arc::new(counts))
    }
}

/// A file's value of a partition column, typed; `None` when it cannot be read as that type.
pub(crate) fn partition_value(
    file: &AddFile,
    column: &str,
    data_type: &DataType,
) -> Option<ScalarValue> {
    match file.partition_values.get(column).cloned().flatten() {
        // The protocol writes a null partition value as null or as an empty string.
        None => ScalarValue::try_from(data_type).ok(),
        Some(text) if text.is_empty() && data_type != &DataType::Utf8 => {
            ScalarValue::try_from(data_type).ok()
        }
        Some(text) => ScalarValue::Utf8(Some(text)).cast_to(data_type).ok(),
    }
}

impl FilesStatistics<'_> {
    /// What the files' statistics say of `field` over all of them: exact bounds and null
    /// count when every file has them, unknown otherwise.
    pub(crate) fn column_statistics(&self, field: &Field) -> ColumnStatistics {
        let column = Column::from_name(field.name());
        let mut statistics = ColumnStatistics::new_unknown();
        let whole = |key: &str, want_min: bool| {
            self.bounds(&column, key)
                .and_then(|bounds| extreme(&bounds, want_min))
                .map_or(Precision::Absent, Precision::Exact)
        };
        if !self.files.is_empty() {
            statistics.min_value = whole("minValues", true);
            statistics.max_value = whole("maxValues", false);
        }
        if let Some(counts) = self.null_counts(&column)
            && let Some(counts) = counts.as_any().downcast_ref::<UInt64Array>()
            && counts.null_count() == 0
        {
            statistics.null_count = Precision::Exact(counts.values().iter().sum::<u64>() as usize);
        }
        statistics
    }
}

impl PruningStatistics for FilesStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, "minValues")
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, "maxValues")
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        if self.partition_columns.contains(&column.name) {
            return None;
        }
        self.counts(|stats| {
            stats
                .get("nullCount")
                .and_then(|counts| counts.get(&column.name))
                .and_then(Value::as_u64)
        })
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        self.counts(|stats| stats.get("numRecords").and_then(Value::as_u64))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_bounds_are_trusted() {
        let long = "x".repeat(40);
        assert_eq!(
            parse_bound(&Value::String("abc".into()), &DataType::Utf8),
            Some(ScalarValue::Utf8(Some("abc".into())))
        );
        assert_eq!(parse_bound(&Value::String(long), &DataType::Utf8), None);
        assert_eq!(
            parse_bound(&serde_json::json!(7), &DataType::Int64),
            Some(ScalarValue::Int64(Some(7)))
        );
        assert_eq!(
            parse_bound(&serde_json::json!(1.5), &DataType::Float64),
            None
        );
        assert_eq!(
            json_bound(&ScalarValue::Date32(Some(0))),
            Some(Value::String("1970-01-01".into()))
        );
    }

    #[test]
    fn partition_values_and_file_bounds_become_pruning_arrays() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("day", DataType::Date32, true),
        ]);
        let file = |stats: &str, day: &str| AddFile {
            path: "f".into(),
            partition_values: [("day".to_string(), Some(day.to_string()))].into(),
            size: 1,
            modification_time: 0,
            stats: Some(stats.to_string()),
            has_deletion_vector: false,
        };
        let files = vec![
            file(
                r#"{"numRecords":2,"minValues":{"id":1},"maxValues":{"id":5}}"#,
                "2024-01-01",
            ),
            file(r#"{"numRecords":3}"#, "2024-01-02"),
        ];
        let partitions = ["day".to_string()];
        let stats = FilesStatistics::new(&schema, &partitions, &files);
        let mins = stats.min_values(&Column::from_name("id")).unwrap();
        assert_eq!(mins.len(), 2);
        assert!(mins.is_valid(0) && mins.is_null(1));
        let days = stats.max_values(&Column::from_name("day")).unwrap();
        assert_eq!(
            ScalarValue::try_from_array(&days, 1).unwrap().to_string(),
            "2024-01-02"
        );
        let rows = stats.row_counts().unwrap();
        assert_eq!(rows.len(), 2);
    }
}
