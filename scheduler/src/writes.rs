//! Writes as stages: `INSERT INTO` a file table and `COPY ... TO` run their write on the
//! executors, and the scheduler commits them.
//!
//! Planning turns DataFusion's `DataSinkExec` (one task writing everything) into a
//! [`WriteFilesExec`] stage: one task per partition of the rows, each writing into its
//! own attempt directory under a staging location beside the target
//! (`<parent>/.quiver-staging-<job>/p<partition>-a<attempt>/`). Readers list only the
//! target, so they see nothing of a write until it commits. Commit moves the files of
//! each partition's successful attempt into the target (after deleting what was there for
//! `INSERT OVERWRITE`); then, like a failed or cancelled write, it deletes the staging
//! location, so retried and abandoned attempts leave no rows behind.

use std::sync::Arc;

use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use quiver_core::JobId;
use quiver_core::storage::StoreRegistry;
use quiver_core::write::{WriteFilesExec, attempt_directory, sink_target};
use url::Url;

/// A write planned as a stage, and what committing it takes.
#[derive(Debug, Clone)]
pub(crate) struct PlannedWrite {
    /// The target as a URL: a directory (`.../table/`) or, for `single_file`, a file.
    pub(crate) target: String,
    pub(crate) staging: String,
    pub(crate) single_file: bool,
    /// `INSERT OVERWRITE`: what the target holds is replaced.
    pub(crate) overwrite: bool,
    /// `CREATE TABLE ... AS`: the managed table to register once the files are in place.
    pub(crate) register: Option<CreateExternalTable>,
    /// A write into a Delta table: its files become visible through one log commit.
    pub(crate) delta: Option<quiver_delta::PendingWrite>,
}

/// Turns a file write planned by DataFusion into a write stage; other plans pass as
/// they are.
pub(crate) fn distribute_write(
    plan: Arc<dyn ExecutionPlan>,
    job_id: &JobId,
) -> Result<(Arc<dyn ExecutionPlan>, Option<PlannedWrite>)> {
    let Some((target, single_file, overwrite)) = sink_target(&plan) else {
        return Ok((plan, None));
    };
    let sink = plan
        .downcast_ref::<DataSinkExec>()
        .expect("sink_target found a DataSinkExec");
    let mut input = Arc::clone(sink.input());
    if !single_file && let Some(coalesce) = input.downcast_ref::<CoalescePartitionsExec>() {
        // Each partition writes its own files: nothing needs gathering.
        input = Arc::clone(coalesce.input());
    }
    let sink_exec = replace_children_if_necessary(Arc::clone(&plan), vec![input])?;
    let staging = staging_location(&target, job_id);
    let write: Arc<dyn ExecutionPlan> = Arc::new(WriteFilesExec::try_new(
        sink_exec,
        staging.clone(),
        single_file,
    )?);
    Ok((
        write,
        Some(PlannedWrite {
            target,
            staging,
            single_file,
            overwrite,
            register: None,
            delta: None,
        }),
    ))
}

/// `<parent of target>/.quiver-staging-<job>/`: beside the target, on the same store
/// (so commit is a rename), and outside what readers of the target list.
fn staging_location(target: &str, job_id: &JobId) -> String {
    let trimmed = target.trim_end_matches('/');
    let parent = match trimmed.rfind('/') {
        Some(slash) if !trimmed[..slash].ends_with(':') && !trimmed[..slash].ends_with(":/") => {
            &trimmed[..=slash]
        }
        // The target is a bucket's root: stage inside it, in a hidden directory.
        _ => target,
    };
    let parent = if parent.ends_with('/') {
        parent.to_string()
    } else {
        format!("{parent}/")
    };
    format!("{parent}.quiver-staging-{job_id}/")
}

fn store_and_path(url: &str, stores: &StoreRegistry) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let url = Url::parse(url)
        .map_err(|e| DataFusionError::Plan(format!("bad write location '{url}': {e}")))?;
    let store = stores.get_store(&url)?;
    let path = Path::from_url_path(url.path()).map_err(|e| DataFusionError::External(e.into()))?;
    Ok((store, path))
}

/// Makes a finished write visible: `attempts[p]` is the attempt whose files partition
/// `p` contributes.
pub(crate) async fn commit(
    write: &PlannedWrite,
    attempts: &[u32],
    stores: &StoreRegistry,
) -> Result<()> {
    let (store, target) = store_and_path(&write.target, stores)?;
    if write.overwrite {
        let (_, staging) = store_and_path(&write.staging, stores)?;
        let existing: Vec<_> = store.list(Some(&target)).try_collect().await?;
        for object in existing {
            // A target at a bucket's root holds the staging directory itself.
            if object.location.prefix_match(&staging).is_none() {
                store.delete(&object.location).await?;
            }
        }
    }
    let mut moved = Vec::new();
    for (partition, attempt) in attempts.iter().enumerate() {
        let directory = attempt_directory(&write.staging, partition, *attempt);
        let (_, from) = store_and_path(&directory, stores)?;
        let written: Vec<_> = store.list(Some(&from)).try_collect().await?;
        for object in written {
            let destination = if write.single_file {
                target.clone()
            } else {
                let relative = object
                    .location
                    .prefix_match(&from)
                    .map(|parts| parts.collect::<Vec<_>>())
                    .unwrap_or_default();
                relative
                    .into_iter()
                    .fold(target.clone(), |path, part| path.join(part))
            };
            store.rename(&object.location, &destination).await?;
            moved.push((destination, object.size));
        }
    }
    if let Some(delta) = &write.delta {
        crate::delta_tables::commit_files(&store, delta, moved).await?;
    }
    discard(write, stores).await
}

/// Deletes the write's staging location and everything in it.
pub(crate) async fn discard(write: &PlannedWrite, stores: &StoreRegistry) -> Result<()> {
    delete_all_under(&write.staging, stores).await
}

/// Deletes every object under the directory URL `location`, and on the local file system
/// the directory itself (it keeps empty directories).
pub(crate) async fn delete_all_under(location: &str, stores: &StoreRegistry) -> Result<()> {
    let (store, prefix) = store_and_path(location, stores)?;
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    for object in objects {
        store.delete(&object.location).await?;
    }
    if let Ok(url) = Url::parse(location)
        && url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        let _ = std::fs::remove_dir_all(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(path: &std::path::Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn files_in(dir: &std::path::Path) -> Vec<String> {
        let mut found: Vec<String> = walk(dir)
            .into_iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect();
        found.sort();
        found
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .flat_map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    vec![e.path()]
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn commit_moves_only_the_successful_attempts_and_clears_staging() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("t");
        write_file(&target.join("old.parquet"), "old");
        let url = |path: &std::path::Path| {
            format!(
                "{}/",
                Url::from_directory_path(path)
                    .unwrap()
                    .as_str()
                    .trim_end_matches('/')
            )
        };
        let write = PlannedWrite {
            target: url(&target),
            staging: staging_location(&url(&target), &JobId::from("j".to_string())),
            single_file: false,
            overwrite: false,
            register: None,
            delta: None,
        };
        let staging = root.path().join(".quiver-staging-j");
        write_file(&staging.join("p0-a0/a.parquet"), "partial, retried");
        write_file(&staging.join("p0-a1/b.parquet"), "p0");
        write_file(&staging.join("p1-a0/region=x/c.parquet"), "p1");
        let stores = StoreRegistry::new();
        commit(&write, &[1, 0], &stores).await.unwrap();
        assert_eq!(
            files_in(&target),
            ["b.parquet", "old.parquet", "region=x/c.parquet"]
        );
        assert!(!staging.exists(), "staging is deleted");

        let replace = PlannedWrite {
            overwrite: true,
            ..write.clone()
        };
        write_file(&staging.join("p0-a0/d.parquet"), "new");
        commit(&replace, &[0], &stores).await.unwrap();
        assert_eq!(files_in(&target), ["d.parquet"]);

        write_file(&staging.join("p0-a0/e.parquet"), "abandoned");
        discard(&write, &stores).await.unwrap();
        assert!(!staging.exists());
        assert_eq!(files_in(&target), ["d.parquet"]);
    }

    #[test]
    fn staging_sits_beside_the_target() {
        let job = JobId::from("j1".to_string());
        assert_eq!(
            staging_location("file:///data/tables/t/", &job),
            "file:///data/tables/.quiver-staging-j1/"
        );
        assert_eq!(
            staging_location("s3://bucket/out/result.parquet", &job),
            "s3://bucket/out/.quiver-staging-j1/"
        );
        assert_eq!(
            staging_location("s3://bucket/t/", &job),
            "s3://bucket/.quiver-staging-j1/"
        );
        assert_eq!(
            staging_location("s3://bucket/", &job),
            "s3://bucket/.quiver-staging-j1/"
        );
    }
}
