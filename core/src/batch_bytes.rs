//! The bytes a batch's rows take, as opposed to the memory its buffers hold.
//!
//! `RecordBatch::get_array_memory_size` counts whole buffers: a two-row slice of an
//! 8192-row array, an aggregate's output built with room for a full batch, and string
//! views pointing into a shared data buffer all count that buffer in full. Limits and
//! figures ("bytes produced", shuffle out) use [`data_bytes`]; memory reservations use
//! the buffers, after [`compacted`] has dropped a batch's unused room.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// Bytes of the values of `batch`'s rows (what Arrow IPC writes before compression,
/// without padding).
pub fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| column_bytes(c.as_ref()))
        .sum()
}

fn column_bytes(column: &dyn Array) -> usize {
    let fixed = column
        .to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| column.get_array_memory_size());
    // Views are counted at 16 bytes each; values longer than 12 bytes live outside them.
    let out_of_line = |lengths: &mut dyn Iterator<Item = u32>| -> usize {
        lengths
            .filter(|&len| len > 12)
            .map(|len| len as usize)
            .sum()
    };
    fixed
        + match column.data_type() {
            DataType::Utf8View => {
                out_of_line(&mut column.as_string_view().views().iter().map(|v| *v as u32))
            }
            DataType::BinaryView => {
                out_of_line(&mut column.as_binary_view().views().iter().map(|v| *v as u32))
            }
            _ => 0,
        }
}

/// A batch and its two sizes, measured once.
#[derive(Debug, Clone)]
pub struct SizedBatch {
    pub batch: RecordBatch,
    /// Bytes its buffers hold (what it takes in memory).
    pub memory: usize,
    /// Bytes of its rows' values ([`data_bytes`]).
    pub data: usize,
}

/// `batch` itself when its buffers hold little beyond its rows; otherwise a copy whose
/// buffers hold just its rows. Slack under 64 KiB, or under the rows' own size, is kept,
/// and so is a batch with a column type Arrow cannot copy row by row.
pub fn compacted(batch: RecordBatch) -> SizedBatch {
    let memory = batch.get_array_memory_size();
    let data = data_bytes(&batch);
    if memory <= 2 * data + (64 << 10) {
        return SizedBatch {
            batch,
            memory,
            data,
        };
    }
    match copied(&batch) {
        Ok(copy) => SizedBatch {
            memory: copy.get_array_memory_size(),
            batch: copy,
            data,
        },
        Err(_) => SizedBatch {
            batch,
            memory,
            data,
        },
    }
}

/// `batch` with every column copied into buffers of its own rows' size.
fn copied(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let rows = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let copied = take(column.as_ref(), &rows, None)?;
            Ok(match copied.data_type() {
                DataType::Utf8View => Arc::new(copied.as_string_view().gc()) as ArrayRef,
                DataType::BinaryView => Arc::new(copied.as_binary_view().gc()) as ArrayRef,
                _ => copied,
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8View, false),
        ]));
        let keys = Int64Array::from_iter_values(0..rows);
        let strings = StringViewArray::from_iter_values(
            (0..rows).map(|i| format!("a string longer than twelve bytes {i}")),
        );
        RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(strings)]).unwrap()
    }

    #[test]
    fn a_slice_counts_its_own_rows_not_its_buffers() {
        let whole = batch(100_000);
        let slice = whole.slice(10, 2);
        let expected = 2 * 8 + 2 * 16 + "a string longer than twelve bytes 10".len() * 2;
        assert_eq!(data_bytes(&slice), expected);
        assert!(slice.get_array_memory_size() > 100 * data_bytes(&slice));
    }

    #[test]
    fn compacting_keeps_the_rows_and_drops_the_room() {
        let whole = batch(100_000);
        let slice = whole.slice(500, 3);
        let compact = compacted(slice.clone()).batch;
        assert_eq!(compact, slice);
        assert!(compact.get_array_memory_size() < 64 << 10);
        let small = batch(10);
        let kept = compacted(small.clone()).batch;
        assert_eq!(
            kept.column(0).to_data().buffers()[0].as_ptr(),
            small.column(0).to_data().buffers()[0].as_ptr()
        );
    }
}
