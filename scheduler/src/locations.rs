//! Table locations on the scheduler: storage options taken out of `CREATE EXTERNAL TABLE`
//! and `COPY` (and registered with the store they configure), local paths made absolute
//! (executors and a restarted scheduler may not share the client's working directory),
//! and the storage options each job's tasks need.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use quiver_core::proto::StoreOptions;
use quiver_core::storage::{StorageOptions, StoreRegistry, store_key};
use url::Url;

use crate::planner::StageDag;

/// A location as a URL: `scheme://...` as written, anything else a local path made
/// absolute.
pub(crate) fn location_url(location: &str) -> Result<Url> {
    if let Ok(url) = Url::parse(location)
        && url.scheme().len() > 1
    {
        return Ok(url);
    }
    let absolute = std::path::absolute(location).map_err(|e| {
        DataFusionError::Plan(format!("cannot resolve the location '{location}': {e}"))
    })?;
    let keep_slash = location.ends_with('/') || location.ends_with(std::path::MAIN_SEPARATOR);
    let url = if keep_slash {
        Url::from_directory_path(&absolute)
    } else {
        Url::from_file_path(&absolute)
    };
    url.map_err(|()| DataFusionError::Plan(format!("'{location}' is not a usable path")))
}

/// A directory as a URL ending in `/`: a local path made absolute, or a URL.
pub(crate) fn directory_location(location: &str) -> Result<String> {
    let mut url = location_url(location)?.to_string();
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

/// A local path as an absolute path, a URL as written.
fn absolute_location(location: &str) -> Result<String> {
    let url = location_url(location)?;
    if url.scheme() != "file" || location.starts_with("file:") {
        return Ok(location.to_string());
    }
    let path = url
        .to_file_path()
        .map_err(|()| DataFusionError::Plan(format!("'{location}' is not a usable path")))?;
    let mut text = path.display().to_string();
    if location.ends_with('/') && !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

/// Readies a catalog statement for the session: storage options go to the registry
/// (not to the table, whose options are shown and checked as format options), and
/// local locations become absolute. Returns the statement and the options it carried.
pub(crate) fn prepare_catalog_change(
    plan: LogicalPlan,
    stores: &StoreRegistry,
) -> Result<(LogicalPlan, StorageOptions)> {
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(mut create)) => {
            let storage = StorageOptions::split_from(&mut create.options);
            create.locations = create
                .locations
                .iter()
                .map(|location| absolute_location(location))
                .collect::<Result<_>>()?;
            for location in &create.locations {
                stores.configure(&location_url(location)?, &storage)?;
            }
            create.definition = create
                .definition
                .map(|definition| redact(definition, &storage));
            Ok((
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)),
                storage,
            ))
        }
        LogicalPlan::Copy(mut copy) => {
            let storage = StorageOptions::split_from(&mut copy.options);
            copy.output_url = absolute_location(&copy.output_url)?;
            stores.configure(&location_url(&copy.output_url)?, &storage)?;
            Ok((LogicalPlan::Copy(copy), storage))
        }
        other => Ok((other, StorageOptions::default())),
    }
}

/// `definition` with every secret value replaced.
fn redact(mut definition: String, storage: &StorageOptions) -> String {
    for value in storage.entries().values().filter(|value| !value.is_empty()) {
        definition = definition.replace(value.as_str(), "***");
    }
    definition
}

/// The storage options every task of `dag` needs: those of each object store its scans
/// read and of the `written` locations, when a table brought some.
pub(crate) fn stores_for(
    dag: &StageDag,
    written: &[&str],
    stores: &StoreRegistry,
) -> Vec<StoreOptions> {
    let mut needed: HashMap<String, StoreOptions> = HashMap::new();
    let mut add = |url: &Url| {
        let options = stores.options_for(url);
        if !options.is_empty() {
            needed
                .entry(store_key(url))
                .or_insert_with(|| StoreOptions {
                    location: url.to_string(),
                    options: options.entries().clone().into_iter().collect(),
                });
        }
    };
    for location in written {
        if let Ok(url) = Url::parse(location) {
            add(&url);
        }
    }
    for stage in &dag.stages {
        visit_scans(&stage.plan, &mut |scan| add(scan.object_store_url.as_ref()));
    }
    needed.into_values().collect()
}

fn visit_scans(plan: &Arc<dyn ExecutionPlan>, visit: &mut impl FnMut(&FileScanConfig)) {
    if let Some(scan) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
    {
        visit(scan);
    }
    for child in plan.children() {
        visit_scans(child, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_absolute_and_urls_stay_as_written() {
        let cwd = std::env::current_dir().unwrap();
        let dir = absolute_location("testdata/t/").unwrap();
        assert_eq!(dir, format!("{}/testdata/t/", cwd.display()));
        let file = absolute_location("t.parquet").unwrap();
        assert_eq!(file, format!("{}/t.parquet", cwd.display()));
        assert_eq!(absolute_location("/abs/x/").unwrap(), "/abs/x/");
        assert_eq!(
            absolute_location("s3://bucket/path/").unwrap(),
            "s3://bucket/path/"
        );
        assert_eq!(location_url("s3://b/p").unwrap().scheme(), "s3");
        assert_eq!(location_url("rel/dir/").unwrap().scheme(), "file");
    }

    #[test]
    fn secrets_are_redacted_from_the_definition() {
        let storage = StorageOptions::new(
            [("aws.secret_access_key".to_string(), "hunter2".to_string())]
                .into_iter()
                .collect(),
        );
        let redacted = redact(
            "CREATE EXTERNAL TABLE t ... OPTIONS ('aws.secret_access_key' 'hunter2')".into(),
            &storage,
        );
        assert!(!redacted.contains("hunter2"));
        assert!(redacted.contains("***"));
    }
}
