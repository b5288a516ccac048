//! A Delta table's schema (the JSON `schemaString` of its metadata) as an Arrow schema,
//! and back.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::{Value, json};

use crate::error::DeltaError;

/// How Delta's `string` and `binary` columns read: as view arrays when the session reads
/// Parquet that way (`datafusion.execution.parquet.schema_force_view_types`), so a Delta
/// table plans like a Parquet table of the same files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewTypes(pub bool);

/// The Arrow schema of a Delta `schemaString`.
pub(crate) fn arrow_schema(schema_string: &str, views: ViewTypes) -> Result<Schema, DeltaError> {
    let value: Value = serde_json::from_str(schema_string)
        .map_err(|e| DeltaError::Log(format!("the table's schema is not JSON: {e}")))?;
    let fields = struct_fields(&value, views)?;
    Ok(Schema::new(fields))
}

fn struct_fields(value: &Value, views: ViewTypes) -> Result<Fields, DeltaError> {
    let fields = value
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| DeltaError::Log(format!("a struct type without fields: {value}")))?;
    fields
        .iter()
        .map(|field| {
            let name = field
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| DeltaError::Log(format!("a field without a name: {field}")))?;
            let data_type = field
                .get("type")
                .ok_or_else(|| DeltaError::Log(format!("field '{name}' has no type")))?;
            let nullable = field
                .get("nullable")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            Ok(Field::new(name, arrow_type(data_type, views)?, nullable))
        })
        .collect()
}

fn arrow_type(value: &Value, views: ViewTypes) -> Result<DataType, DeltaError> {
    if let Some(name) = value.as_str() {
        return primitive_type(name, views);
    }
    match value.get("type").and_then(Value::as_str) {
        Some("struct") => Ok(DataType::Struct(struct_fields(value, views)?)),
        Some("array") => {
            let element = value
                .get("elementType")
                .ok_or_else(|| DeltaError::Log(format!("an array without elementType: {value}")))?;
            let nullable = value
                .get("containsNull")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            Ok(DataType::List(Arc::new(Field::new(
                "element",
                arrow_type(element, views)?,
                nullable,
            ))))
        }
        Some("map") => {
            let part = |key: &str| {
                value
                    .get(key)
                    .ok_or_else(|| DeltaError::Log(format!("a map without {key}: {value}")))
            };
            let values_nullable = value
                .get("valueContainsNull")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let entries = Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(part("keyType")?, views)?, false),
                    Field::new(
                        "value",
                        arrow_type(part("valueType")?, views)?,
                        values_nullable,
                    ),
                ])),
                false,
            );
            Ok(DataType::Map(Arc::new(entries), false))
        }
        _ => Err(DeltaError::Unsupported(format!("column type {value}"))),
    }
}

fn primitive_type(name: &str, views: ViewTypes) -> Result<DataType, DeltaError> {
    Ok(match name {
        "string" if views.0 => DataType::Utf8View,
        "string" => DataType::Utf8,
        "binary" if views.0 => DataType::BinaryView,
        "binary" => DataType::Binary,
        "long" => DataType::Int64,
        "integer" => DataType::Int32,
        "short" => DataType::Int16,
        "byte" => DataType::Int8,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        decimal if decimal.starts_with("decimal(") => {
            let inner = decimal.trim_start_matches("decimal(").trim_end_matches(')');
            let (precision, scale) = inner
                .split_once(',')
                .ok_or_else(|| DeltaError::Log(format!("bad decimal type '{decimal}'")))?;
            let precision: u8 = precision
                .trim()
                .parse()
                .map_err(|_| DeltaError::Log(format!("bad decimal type '{decimal}'")))?;
            let scale: i8 = scale
                .trim()
                .parse()
                .map_err(|_| DeltaError::Log(format!("bad decimal type '{decimal}'")))?;
            DataType::Decimal128(precision, scale)
        }
        other => return Err(DeltaError::Unsupported(format!("column type '{other}'"))),
    })
}

/// The Delta `schemaString` of an Arrow schema, for a table created here.
pub(crate) fn schema_string(schema: &Schema) -> Result<String, DeltaError> {
    let fields = schema
        .fields()
        .iter()
        .map(|field| delta_field(field))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"type": "struct", "fields": fields}).to_string())
}

fn delta_field(field: &Field) -> Result<Value, DeltaError> {
    Ok(json!({
        "name": field.name(),
        "type": delta_type(field.data_type())
            .map_err(|why| DeltaError::Unsupported(format!("column '{}': {why}", field.name())))?,
        "nullable": field.is_nullable(),
        "metadata": {},
    }))
}

fn delta_type(data_type: &DataType) -> Result<Value, String> {
    let primitive = |name: &str| Ok(Value::String(name.to_string()));
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => primitive("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => primitive("binary"),
        DataType::Int64 | DataType::UInt32 => primitive("long"),
        DataType::Int32 | DataType::UInt16 => primitive("integer"),
        DataType::Int16 | DataType::UInt8 => primitive("short"),
        DataType::Int8 => primitive("byte"),
        DataType::Float32 => primitive("float"),
        DataType::Float64 => primitive("double"),
        DataType::Boolean => primitive("boolean"),
        DataType::Date32 => primitive("date"),
        DataType::Timestamp(_, Some(_)) => primitive("timestamp"),
        DataType::Timestamp(_, None) => primitive("timestamp_ntz"),
        DataType::Decimal128(precision, scale) if *precision <= 38 && *scale >= 0 => {
            Ok(Value::String(format!("decimal({precision},{scale})")))
        }
        DataType::List(element) | DataType::LargeList(element) => Ok(json!({
            "type": "array",
            "elementType": delta_type(element.data_type())?,
            "containsNull": element.is_nullable(),
        })),
        DataType::Struct(fields) => Ok(json!({
            "type": "struct",
            "fields": fields
                .iter()
                .map(|field| delta_field(field).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?,
        })),
        DataType::Map(entries, _) => {
            let DataType::Struct(parts) = entries.data_type() else {
                return Err(format!("a map type Delta cannot hold: {data_type}"));
            };
            let [key, value] = parts.iter().collect::<Vec<_>>()[..] else {
                return Err(format!("a map type Delta cannot hold: {data_type}"));
            };
            Ok(json!({
                "type": "map",
                "keyType": delta_type(key.data_type())?,
                "valueType": delta_type(value.data_type())?,
                "valueContainsNull": value.is_nullable(),
            }))
        }
        other => Err(format!("type {other} has no Delta equivalent")),
    }
}

/// Whether the schema has a column Delta's `timestampNtz` table feature must announce.
pub(crate) fn has_timestamp_without_zone(schema: &Schema) -> bool {
    fn in_type(data_type: &DataType) -> bool {
        match data_type {
            DataType::Timestamp(_, None) => true,
            DataType::List(element) | DataType::LargeList(element) => in_type(element.data_type()),
            DataType::Struct(fields) => fields.iter().any(|f| in_type(f.data_type())),
            DataType::Map(entries, _) => in_type(entries.data_type()),
            _ => false,
        }
    }
    schema.fields().iter().any(|f| in_type(f.data_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_survives_the_trip_through_delta_json() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("element", DataType::Int32, true))),
                true,
            ),
        ]);
        let text = schema_string(&schema).unwrap();
        assert!(text.contains(r#""type":"decimal(15,2)""#), "{text}");
        let back = arrow_schema(&text, ViewTypes(false)).unwrap();
        assert_eq!(back, schema);
        let viewed = arrow_schema(&text, ViewTypes(true)).unwrap();
        assert_eq!(viewed.field(1).data_type(), &DataType::Utf8View);
    }

    #[test]
    fn types_delta_has_no_name_for_are_refused_by_column() {
        let schema = Schema::new(vec![Field::new("u", DataType::UInt64, true)]);
        let error = schema_string(&schema).unwrap_err().to_string();
        assert!(error.contains("column 'u'"), "{error}");
    }
}
