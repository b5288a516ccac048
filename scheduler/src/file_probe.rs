//! Finding the file behind a failed `CREATE EXTERNAL TABLE`: DataFusion infers a table's
//! schema from all its files at once and reports a corrupt, truncated or empty one without
//! its name. On that error path (never otherwise) each file is read alone, so the client
//! is told which file to fix.

use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

/// Files read alone at most, so that a huge directory cannot make an error slow.
const MAX_FILES_PROBED: usize = 1_000;

/// The first file of `create`'s locations that cannot be read on its own, with why.
pub(crate) async fn first_unreadable_file(
    create: &CreateExternalTable,
    context: &SessionContext,
) -> Option<(String, String)> {
    let state = context.state();
    let format = state
        .get_file_format_factory(&create.file_type)?
        .create(&state, &create.options)
        .ok()?;
    for location in &create.locations {
        let url = ListingTableUrl::parse(location).ok()?;
        let store = state.runtime_env().object_store(url.object_store()).ok()?;
        let files: Vec<_> = url
            .list_all_files(&state, store.as_ref(), "")
            .await
            .ok()?
            .take(MAX_FILES_PROBED)
            .try_collect()
            .await
            .ok()?;
        for file in &files {
            let alone = format
                .infer_schema(&state, &Arc::clone(&store), std::slice::from_ref(file))
                .await;
            if let Err(error) = alone {
                let name = format!("{}{}", url.object_store().as_str(), file.location);
                return Some((name, error.to_string()));
            }
        }
    }
    None
}
