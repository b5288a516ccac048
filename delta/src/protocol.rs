//! Which tables this engine reads and writes: a table needing a protocol feature that is
//! not implemented is refused with the feature's name, never read or written wrongly.

use crate::error::DeltaError;
use crate::log::Snapshot;

/// Reader features whose tables read correctly here (deletion vectors and column mapping
/// are checked against what the table really uses).
const READABLE_FEATURES: &[&str] = &[
    "timestampNtz",
    "vacuumProtocolCheck",
    "deletionVectors",
    "columnMapping",
];

/// Checks that the snapshot reads correctly as plain Parquet scans.
pub(crate) fn check_readable(snapshot: &Snapshot) -> Result<(), DeltaError> {
    let protocol = &snapshot.protocol;
    if protocol.min_reader_version > 3 {
        return Err(DeltaError::Unsupported(format!(
            "reader version {} (this engine reads versions 1 to 3)",
            protocol.min_reader_version
        )));
    }
    if protocol.min_reader_version == 3 {
        for feature in &protocol.reader_features {
            if !READABLE_FEATURES.contains(&feature.as_str()) {
                return Err(DeltaError::Unsupported(format!(
                    "reader feature '{feature}'"
                )));
            }
        }
    }
    if let Some(mode) = column_mapping(snapshot) {
        return Err(DeltaError::Unsupported(format!(
            "column mapping (delta.columnMapping.mode = {mode}): the Parquet files' column \
             names are not the table's"
        )));
    }
    let with_deletions = snapshot
        .files
        .iter()
        .filter(|file| file.has_deletion_vector)
        .count();
    if with_deletions > 0 {
        return Err(DeltaError::Unsupported(format!(
            "deletion vectors: {with_deletions} file(s) of version {} have rows deleted \
             through deletion vectors",
            snapshot.version
        )));
    }
    Ok(())
}

/// Checks that this engine may add files to the snapshot's table (and, for an overwrite,
/// remove them) without breaking a rule a feature of the table sets.
pub(crate) fn check_writable(snapshot: &Snapshot, overwrite: bool) -> Result<(), DeltaError> {
    check_readable(snapshot)?;
    let protocol = &snapshot.protocol;
    let configuration = &snapshot.metadata.configuration;
    let schema = &snapshot.metadata.schema_string;
    let refuse = |what: &str| Err(DeltaError::Unsupported(format!("writing {what}")));
    if protocol.min_writer_version > 7 {
        return refuse(&format!(
            "a table of writer version {}",
            protocol.min_writer_version
        ));
    }
    if overwrite && configuration.get("delta.appendOnly").map(String::as_str) == Some("true") {
        return refuse("over an append-only table (delta.appendOnly = true)");
    }
    if schema.contains("delta.invariants") {
        return refuse("a table with column invariants");
    }
    if configuration
        .keys()
        .any(|k| k.starts_with("delta.constraints."))
    {
        return refuse("a table with CHECK constraints");
    }
    if configuration
        .get("delta.enableChangeDataFeed")
        .is_some_and(|v| v == "true")
    {
        return refuse("a table with the change data feed on");
    }
    if schema.contains("delta.generationExpression") {
        return refuse("a table with generated columns");
    }
    if schema.contains("delta.identity") {
        return refuse("a table with identity columns");
    }
    if protocol.min_writer_version == 7 {
        for feature in &protocol.writer_features {
            if !writable_feature(feature) {
                return refuse(&format!("a table with writer feature '{feature}'"));
            }
        }
    }
    Ok(())
}

/// Writer features whose rules are checked above (or that ask nothing of an append).
fn writable_feature(feature: &str) -> bool {
    matches!(
        feature,
        "appendOnly"
            | "invariants"
            | "timestampNtz"
            | "checkConstraints"
            | "changeDataFeed"
            | "generatedColumns"
            | "identityColumns"
            | "columnMapping"
            | "deletionVectors"
            | "vacuumProtocolCheck"
    )
}

fn column_mapping(snapshot: &Snapshot) -> Option<&str> {
    snapshot
        .metadata
        .configuration
        .get("delta.columnMapping.mode")
        .map(String::as_str)
        .filter(|mode| *mode != "none")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{AddFile, Metadata, Protocol};

    fn snapshot(protocol: Protocol) -> Snapshot {
        Snapshot {
            version: 3,
            protocol,
            metadata: Metadata {
                id: "id".to_string(),
                schema_string: r#"{"type":"struct","fields":[]}"#.to_string(),
                partition_columns: Vec::new(),
                configuration: Default::default(),
                created_time: None,
            },
            files: Vec::new(),
        }
    }

    fn features(reader: &[&str]) -> Protocol {
        Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: reader.iter().map(|f| f.to_string()).collect(),
            writer_features: reader.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn deletion_vectors_in_use_are_refused_by_name() {
        let mut table = snapshot(features(&["deletionVectors"]));
        check_readable(&table).expect("the feature alone changes no rows");
        table.files.push(AddFile {
            path: "a.parquet".to_string(),
            partition_values: Default::default(),
            size: 1,
            modification_time: 0,
            stats: None,
            has_deletion_vector: true,
        });
        let error = check_readable(&table).unwrap_err().to_string();
        assert!(error.contains("deletion vectors"), "{error}");
    }

    #[test]
    fn column_mapping_and_unknown_features_are_refused_by_name() {
        let mut table = snapshot(features(&["columnMapping"]));
        table
            .metadata
            .configuration
            .insert("delta.columnMapping.mode".to_string(), "name".to_string());
        let error = check_readable(&table).unwrap_err().to_string();
        assert!(error.contains("column mapping"), "{error}");
        let error = check_readable(&snapshot(features(&["variantType"])))
            .unwrap_err()
            .to_string();
        assert!(error.contains("'variantType'"), "{error}");
    }

    #[test]
    fn an_append_only_table_takes_appends_only() {
        let mut table = snapshot(Protocol {
            reader_features: Vec::new(),
            ..features(&["appendOnly"])
        });
        table
            .metadata
            .configuration
            .insert("delta.appendOnly".to_string(), "true".to_string());
        check_writable(&table, false).unwrap();
        let error = check_writable(&table, true).unwrap_err().to_string();
        assert!(error.contains("append-only"), "{error}");
        let row_tracking = Protocol {
            reader_features: Vec::new(),
            ..features(&["rowTracking"])
        };
        let error = check_writable(&snapshot(row_tracking), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("'rowTracking'"), "{error}");
    }
}
