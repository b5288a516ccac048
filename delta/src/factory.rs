//! `CREATE EXTERNAL TABLE t [(columns)] STORED AS DELTA LOCATION '...' [OPTIONS (...)]`:
//! opens the table at that location, or creates it (version 0) when the statement gives
//! columns and nothing is there yet. Options `'version' 'n'` and
//! `'timestamp' '2026-01-01T00:00:00Z'` pin the table to an older snapshot (time travel).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::CreateExternalTable;

use crate::commit::create_table;
use crate::error::DeltaError;
use crate::log::{VersionSpec, load_snapshot};
use crate::protocol::check_readable;
use crate::schema::ViewTypes;
use crate::table::DeltaTable;

/// The file type name the factory is registered under.
pub const DELTA: &str = "DELTA";

#[derive(Debug, Default)]
pub struct DeltaTableFactory;

/// The snapshot a table's options pin, if any.
pub(crate) fn pinned_version(options: &HashMap<String, String>) -> Result<VersionSpec, DeltaError> {
    let mut spec = VersionSpec::Latest;
    for (key, value) in options {
        let key = key.strip_prefix("format.").unwrap_or(key);
        let pinned = match key {
            "version" => VersionSpec::Version(value.trim().parse().map_err(|_| {
                DeltaError::NoSuchVersion(format!(
                    "option 'version' takes a version number, not '{value}'"
                ))
            })?),
            "timestamp" => {
                let nanos = string_to_timestamp_nanos(value.trim()).map_err(|e| {
                    DeltaError::NoSuchVersion(format!(
                        "option 'timestamp' takes a time such as '2026-01-31T12:00:00Z', not \
                         '{value}': {e}"
                    ))
                })?;
                VersionSpec::AsOf(nanos.div_euclid(1_000_000))
            }
            // Store settings (`aws.`, `gcp.`, ...) are the catalog's business.
            other if other.contains('.') => continue,
            other => {
                return Err(DeltaError::Unsupported(format!(
                    "table option '{other}' (Delta tables take 'version' or 'timestamp')"
                )));
            }
        };
        if spec != VersionSpec::Latest {
            return Err(DeltaError::Unsupported(
                "both 'version' and 'timestamp': pin one".to_string(),
            ));
        }
        spec = pinned;
    }
    Ok(spec)
}

#[async_trait]
impl TableProviderFactory for DeltaTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let version = pinned_version(&cmd.options)?;
        let given = match cmd.locations.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "a Delta table has one location, its root".to_string(),
                ));
            }
        };
        let location = if given.ends_with('/') {
            given.clone()
        } else {
            format!("{given}/")
        };
        let url = ListingTableUrl::parse(&location)?;
        let store = state.runtime_env().object_store(url.object_store())?;
        let root = url.prefix().clone();
        let views = ViewTypes(
            state
                .config_options()
                .execution
                .parquet
                .schema_force_view_types,
        );
        let declared: Schema = cmd.schema.as_arrow().clone();
        let latest = match load_snapshot(&store, &root, VersionSpec::Latest, &given).await {
            Err(DeltaError::NotATable(_)) if !declared.fields().is_empty() => {
                if version != VersionSpec::Latest {
                    return Err(DeltaError::NoSuchVersion(format!(
                        "'{}' holds no table yet, so no older version",
                        given
                    ))
                    .into());
                }
                create_table(&store, &root, &declared, &cmd.table_partition_cols, &given).await?;
                load_snapshot(&store, &root, VersionSpec::Latest, &given).await?
            }
            Err(DeltaError::NotATable(at)) => {
                return Err(DataFusionError::Plan(format!(
                    "{}; give the table's columns to create one",
                    DeltaError::NotATable(at)
                )));
            }
            other => other?,
        };
        if !declared.fields().is_empty() {
            let existing = crate::schema::arrow_schema(&latest.metadata.schema_string, views)?;
            let names = |schema: &Schema| {
                let mut names: Vec<String> =
                    schema.fields().iter().map(|f| f.name().clone()).collect();
                names.sort();
                names
            };
            if names(&existing) != names(&declared) {
                return Err(DataFusionError::Plan(format!(
                    "the Delta table at '{}' has columns ({}), not the ({}) declared",
                    given,
                    names(&existing).join(", "),
                    names(&declared).join(", ")
                )));
            }
        }
        let snapshot = if version == VersionSpec::Latest {
            latest
        } else {
            load_snapshot(&store, &root, version, &given).await?
        };
        let table = DeltaTable::new(
            url,
            given.clone(),
            version,
            &snapshot,
            views,
            cmd.definition.clone(),
        )?;
        // A table this engine cannot read is refused when it is registered, not later.
        check_readable(&snapshot)?;
        Ok(Arc::new(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_pin_a_version_or_a_time() {
        assert_eq!(pinned_version(&options(&[])).unwrap(), VersionSpec::Latest);
        assert_eq!(
            pinned_version(&options(&[("format.version", "3")])).unwrap(),
            VersionSpec::Version(3)
        );
        assert_eq!(
            pinned_version(&options(&[("timestamp", "1970-01-01T00:00:01Z")])).unwrap(),
            VersionSpec::AsOf(1000)
        );
        assert!(pinned_version(&options(&[("version", "x")])).is_err());
        assert!(pinned_version(&options(&[("versoin", "1")])).is_err());
        assert!(
            pinned_version(&options(&[("version", "1"), ("timestamp", "1970-01-01")])).is_err()
        );
        assert_eq!(
            pinned_version(&options(&[("aws.region", "x")])).unwrap(),
            VersionSpec::Latest
        );
    }
}
