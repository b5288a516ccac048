//! Flight SQL catalog metadata: what drivers and BI tools ask before the first query
//! (server facts, catalogs, schemas, tables, table types, data types), answered from the
//! scheduler's live catalog.

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo};
use arrow_flight::sql::metadata::{XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, Nullable, Searchable, SqlInfo, SqlNullOrdering,
    SqlSupportedCaseSensitivity, SupportedSqlGrammar, XdbcDataType, XdbcDatetimeSubcode,
};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use tonic::Status;

/// Server name reported to clients.
pub const SERVER_NAME: &str = "Quiver";

/// The facts `GetSqlInfo` reports, built once.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, SERVER_NAME);
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    info.append(SqlInfo::FlightSqlServerReadOnly, false);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    info.append(SqlInfo::FlightSqlServerCancel, true);
    info.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    info.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, true);
    info.append(SqlInfo::SqlDdlTable, true);
    // Unquoted identifiers fold to lower case; quoted ones keep their case.
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    info.append(SqlInfo::SqlSearchStringEscape, "\\");
    info.append(SqlInfo::SqlSupportsColumnAliasing, true);
    info.append(SqlInfo::SqlNullPlusNullIsNull, true);
    info.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    info.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    info.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    info.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    info.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    info.append(SqlInfo::SqlCatalogTerm, "catalog");
    info.append(SqlInfo::SqlSchemaTerm, "schema");
    info.append(SqlInfo::SqlCatalogAtStart, true);
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
    info.append(SqlInfo::SqlBatchUpdatesSupported, false);
    info.build().expect("static SQL info is well formed")
});

/// The data types `GetXdbcTypeInfo` describes, built once.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut types = XdbcTypeInfoDataBuilder::new();
    let numeric = |name: &str, data_type: XdbcDataType, size: i32| XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size: Some(size),
        literal_prefix: None,
        literal_suffix: None,
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: false,
        searchable: Searchable::Full,
        unsigned_attribute: Some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: Some(10),
        interval_precision: None,
    };
    types.append(numeric("BOOLEAN", XdbcDataType::XdbcBit, 1));
    types.append(numeric("TINYINT", XdbcDataType::XdbcTinyint, 3));
    types.append(numeric("SMALLINT", XdbcDataType::XdbcSmallint, 5));
    types.append(numeric("INTEGER", XdbcDataType::XdbcInteger, 10));
    types.append(numeric("BIGINT", XdbcDataType::XdbcBigint, 19));
    types.append(numeric("REAL", XdbcDataType::XdbcReal, 7));
    types.append(numeric("DOUBLE", XdbcDataType::XdbcDouble, 15));
    types.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".to_string(), "scale".to_string()]),
        fixed_prec_scale: true,
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        ..numeric("DECIMAL", XdbcDataType::XdbcDecimal, 38)
    });
    let text = |name: &str, data_type: XdbcDataType| XdbcTypeInfo {
        literal_prefix: Some("'".to_string()),
        literal_suffix: Some("'".to_string()),
        case_sensitive: true,
        unsigned_attribute: None,
        num_prec_radix: None,
        column_size: Some(i32::MAX),
        ..numeric(name, data_type, 0)
    };
    types.append(text("VARCHAR", XdbcDataType::XdbcVarchar));
    types.append(XdbcTypeInfo {
        literal_prefix: Some("X'".to_string()),
        ..text("BYTEA", XdbcDataType::XdbcBinary)
    });
    let temporal = |name: &str, subcode: XdbcDatetimeSubcode, size: i32| XdbcTypeInfo {
        literal_prefix: Some(format!("{name} '")),
        datetime_subcode: Some(subcode),
        sql_data_type: XdbcDataType::XdbcDatetime,
        column_size: Some(size),
        ..text(name, XdbcDataType::XdbcDatetime)
    };
    types.append(XdbcTypeInfo {
        data_type: XdbcDataType::XdbcDate,
        ..temporal("DATE", XdbcDatetimeSubcode::XdbcSubcodeYear, 10)
    });
    types.append(XdbcTypeInfo {
        data_type: XdbcDataType::XdbcTime,
        ..temporal("TIME", XdbcDatetimeSubcode::XdbcSubcodeTime, 8)
    });
    types.append(XdbcTypeInfo {
        data_type: XdbcDataType::XdbcTimestamp,
        ..temporal("TIMESTAMP", XdbcDatetimeSubcode::XdbcSubcodeTimestamp, 26)
    });
    types.build().expect("static type info is well formed")
});

/// Table types as `information_schema` names them.
fn table_type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::Base => "BASE TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

fn internal(context: &str, error: impl std::fmt::Display) -> Status {
    Status::internal(format!("{context}: {error}"))
}

pub fn catalogs(
    context: &SessionContext,
    query: CommandGetCatalogs,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    let mut names = context.catalog_names();
    names.sort();
    for name in names {
        builder.append(name);
    }
    builder.build().map_err(|e| internal("listing catalogs", e))
}

pub fn schemas(
    context: &SessionContext,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for catalog_name in context.catalog_names() {
        let Some(catalog) = context.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            builder.append(&catalog_name, schema_name);
        }
    }
    builder.build().map_err(|e| internal("listing schemas", e))
}

pub async fn tables(
    context: &SessionContext,
    query: CommandGetTables,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for catalog_name in context.catalog_names() {
        let Some(catalog) = context.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table_name in schema.table_names() {
                let table = schema
                    .table(&table_name)
                    .await
                    .map_err(|e| internal(&format!("reading table {table_name}"), e))?;
                let Some(table) = table else { continue };
                builder
                    .append(
                        &catalog_name,
                        &schema_name,
                        &table_name,
                        table_type_name(table.table_type()),
                        table.schema().as_ref(),
                    )
                    .map_err(|e| internal("listing tables", e))?;
            }
        }
    }
    builder.build().map_err(|e| internal("listing tables", e))
}

pub fn sql_info(query: CommandGetSqlInfo) -> Result<RecordBatch, Status> {
    query
        .into_builder(&SQL_INFO)
        .build()
        .map_err(|e| internal("building SQL info", e))
}

pub fn xdbc_types(query: CommandGetXdbcTypeInfo) -> Result<RecordBatch, Status> {
    query
        .into_builder(&XDBC_TYPES)
        .build()
        .map_err(|e| internal("building type info", e))
}

pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for table_type in [TableType::Base, TableType::View, TableType::Temporary] {
        builder.append(table_type_name(table_type));
    }
    builder
        .build()
        .map_err(|e| internal("listing table types", e))
}

/// The (always empty) answer to `GetPrimaryKeys`: Quiver tables declare no keys.
pub fn primary_keys() -> RecordBatch {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let schema = Schema::new(vec![
        text("catalog_name", true),
        text("db_schema_name", true),
        text("table_name", false),
        text("column_name", false),
        text("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]);
    RecordBatch::new_empty(Arc::new(schema))
}

/// The (always empty) answer to `GetExportedKeys`, `GetImportedKeys` and
/// `GetCrossReference`: Quiver tables declare no foreign keys.
pub fn foreign_keys() -> RecordBatch {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]));
    RecordBatch::new_empty(schema)
}
