//! Finding the file behind a failed `CREATE EXTERNAL TABLE`: DataFusion infers a table's
//! schema from all its files at once and reports a corrupt, truncated or empty one, or
//! two files whose schemas cannot be merged, without naming them. On that error path
//! (never otherwise) each file is read alone, so the client is told which file to fix.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

/// Files read alone at most, so that a huge directory cannot make an error slow.
const MAX_FILES_PROBED: usize = 1_000;

/// What reading a table's files one by one found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileProblem {
    /// The file cannot be read on its own.
    Unreadable { file: String, why: String },
    /// The file reads, but its schema cannot be merged with the first file's.
    SchemaMismatch {
        file: String,
        first_file: String,
        why: String,
    },
}

impl FileProblem {
    /// The message for a client creating `table`.
    pub(crate) fn describe(&self, table: &str) -> String {
        match self {
            FileProblem::Unreadable { file, why } => {
                format!("file {file} of table {table} cannot be read: {why}")
            }
            FileProblem::SchemaMismatch {
                file,
                first_file,
                why,
            } => format!(
                "file {file} of table {table} does not have the schema of {first_file}: {why}"
            ),
        }
    }
}

/// The first file of `create`'s locations that cannot be read on its own, or whose
/// schema does not merge with the first file's.
pub(crate) async fn first_problem_file(
    create: &CreateExternalTable,
    context: &SessionContext,
) -> Option<FileProblem> {
    let state = context.state();
    let format = state
        .get_file_format_factory(&create.file_type)?
        .create(&state, &create.options)
        .ok()?;
    let mut first: Option<(String, Schema)> = None;
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
            let name = format!("{}{}", url.object_store().as_str(), file.location);
            let schema = match format
                .infer_schema(&state, &Arc::clone(&store), std::slice::from_ref(file))
                .await
            {
                Ok(schema) => schema.as_ref().clone(),
                Err(error) => {
                    return Some(FileProblem::Unreadable {
                        file: name,
                        why: error.to_string(),
                    });
                }
            };
            // Empty files (which DataFusion skips) have no columns to disagree on.
            if schema.fields().is_empty() {
                continue;
            }
            match &first {
                None => first = Some((name, schema)),
                Some((first_file, first_schema)) => {
                    if let Err(error) = Schema::try_merge([first_schema.clone(), schema]) {
                        return Some(FileProblem::SchemaMismatch {
                            file: name,
                            first_file: first_file.clone(),
                            why: error.to_string(),
                        });
                    }
                }
            }
        }
    }
    None
}
