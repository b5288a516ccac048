//! Encoding plans for the wire: datafusion-proto for DataFusion's nodes, plus
//! [`QuiverCodec`] for Quiver's exchange nodes and the DataFusion nodes datafusion-proto
//! does not carry (compressed scans, recursive CTEs).

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::Schema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::{
    DeduplicatingProtoConverter, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::compressed_scan::CompressedScanExec;
use crate::exchange::{ReadMode, ReadSlice, ShuffleReaderExec, ShuffleWriterExec};
use crate::exchange_filter::ExchangeFilterExec;
use crate::proto::{self as wire, extension_node::Node};
use crate::recursive_cte::{
    decode_recursive_query, decode_work_table, encode_recursive_query, encode_work_table,
};
use crate::write::WriteFilesExec;

/// Encodes and decodes [`ShuffleWriterExec`] and [`ShuffleReaderExec`].
#[derive(Debug, Default, Clone, Copy)]
pub struct QuiverCodec;

impl PhysicalExtensionCodec for QuiverCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = wire::ExtensionNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("bad Quiver plan node: {e}")))?;
        match node.node {
            Some(Node::Writer(writer)) => {
                let [child] = inputs else {
                    return Err(DataFusionError::Internal(
                        "ShuffleWriterExec needs exactly one input".to_string(),
                    ));
                };
                Ok(Arc::new(ShuffleWriterExec::new(
                    writer.job_id,
                    writer.stage_id,
                    Arc::clone(child),
                )))
            }
            Some(Node::Reader(reader)) => {
                let schema = protobuf::Schema::decode(reader.schema.as_slice())
                    .map_err(|e| DataFusionError::Internal(format!("bad reader schema: {e}")))?;
                let schema = Schema::try_from(&schema)?;
                let mode = match wire::ReadMode::try_from(reader.mode) {
                    Ok(wire::ReadMode::PerProducer) => ReadMode::PerProducer,
                    _ => ReadMode::Hash,
                };
                let partitions = reader.partitions;
                let slices: Vec<ReadSlice> = reader.slices.iter().map(decode_slice).collect();
                let decoded = ShuffleReaderExec::new(
                    reader.job_id,
                    reader.stage_id,
                    Arc::new(schema),
                    partitions as usize,
                    mode,
                )
                .with_constant_columns(
                    reader
                        .constant_columns
                        .iter()
                        .map(|&i| i as usize)
                        .collect(),
                )
                .with_equal_columns(
                    reader
                        .equal_column_pairs
                        .chunks_exact(2)
                        .map(|pair| (pair[0] as usize, pair[1] as usize))
                        .collect(),
                )
                .with_hash_columns(reader.hash_columns.iter().map(|&i| i as usize).collect())
                .with_locations(reader.locations);
                if slices.is_empty() {
                    return Ok(Arc::new(decoded));
                }
                let count = slices.len();
                let sliced = decoded.with_slices(slices);
                if sliced.slices().map(<[ReadSlice]>::len) != Some(count) {
                    return Err(DataFusionError::Internal(format!(
                        "bad reader slices for stage {}: they must name partitions below {}",
                        sliced.stage_id(),
                        sliced.planned_partitions()
                    )));
                }
                Ok(Arc::new(sliced))
            }
            Some(Node::WriteFiles(write)) => {
                let [child] = inputs else {
                    return Err(DataFusionError::Internal(
                        "WriteFilesExec needs exactly one input".to_string(),
                    ));
                };
                Ok(Arc::new(WriteFilesExec::try_new(
                    Arc::clone(child),
                    write.staging,
                    write.single_file,
                )?))
            }
            Some(Node::CompressedScan(scan)) => {
                let [child] = inputs else {
                    return Err(DataFusionError::Internal(
                        "CompressedScanExec needs exactly one input".to_string(),
                    ));
                };
                CompressedScanExec::restore(child, &scan.compression)
            }
            Some(Node::RecursiveQuery(query)) => decode_recursive_query(query, inputs),
            Some(Node::WorkTable(scan)) => decode_work_table(scan),
            Some(Node::ExchangeFilter(node)) => {
                let [child] = inputs else {
                    return Err(DataFusionError::Internal(
                        "ExchangeFilterExec needs exactly one input".to_string(),
                    ));
                };
                let schema = child.schema();
                let decode = PhysicalPlanDecodeContext::new(ctx, self);
                let filters = node
                    .filters
                    .iter()
                    .map(|bytes| {
                        let expr =
                            protobuf::PhysicalExprNode::decode(bytes.as_slice()).map_err(|e| {
                                DataFusionError::Internal(format!("bad exchange filter: {e}"))
                            })?;
                        proto_converter.proto_to_physical_expr(&expr, &schema, &decode)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(ExchangeFilterExec::new(
                    Arc::clone(child),
                    filters,
                )))
            }
            None => Err(DataFusionError::Internal(
                "empty Quiver plan node".to_string(),
            )),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let any: &dyn ExecutionPlan = node.as_ref();
        let encoded = if let Some(writer) = any.downcast_ref::<ShuffleWriterExec>() {
            Node::Writer(wire::ShuffleWriterNode {
                job_id: writer.job_id().to_string(),
                stage_id: writer.stage_id(),
                repartition: writer.repartition().is_some(),
            })
        } else if let Some(reader) = any.downcast_ref::<ShuffleReaderExec>() {
            let schema: protobuf::Schema = reader.schema().as_ref().try_into()?;
            Node::Reader(wire::ShuffleReaderNode {
                job_id: reader.job_id().to_string(),
                stage_id: reader.stage_id(),
                schema: schema.encode_to_vec(),
                partitions: match reader.mode() {
                    ReadMode::Hash => reader.planned_partitions() as u32,
                    ReadMode::PerProducer => reader.partition_count() as u32,
                },
                mode: match reader.mode() {
                    ReadMode::Hash => wire::ReadMode::Hash as i32,
                    ReadMode::PerProducer => wire::ReadMode::PerProducer as i32,
                },
                locations: reader.locations().to_vec(),
                constant_columns: reader
                    .constant_columns()
                    .iter()
                    .map(|&i| i as u32)
                    .collect(),
                equal_column_pairs: reader
                    .equal_columns()
                    .iter()
                    .flat_map(|&(a, b)| [a as u32, b as u32])
                    .collect(),
                hash_columns: reader.hash_columns().iter().map(|&i| i as u32).collect(),
                slices: reader
                    .slices()
                    .unwrap_or_default()
                    .iter()
                    .map(encode_slice)
                    .collect(),
            })
        } else if let Some(write) = any.downcast_ref::<WriteFilesExec>() {
            Node::WriteFiles(wire::WriteFilesNode {
                staging: write.staging().to_string(),
                single_file: write.single_file(),
            })
        } else if let Some(scan) = any.downcast_ref::<CompressedScanExec>() {
            Node::CompressedScan(wire::CompressedScanNode {
                compression: scan.compression(),
            })
        } else if let Some(query) = any.downcast_ref::<RecursiveQueryExec>() {
            Node::RecursiveQuery(encode_recursive_query(query)?)
        } else if let Some(scan) = any.downcast_ref::<WorkTableExec>() {
            Node::WorkTable(encode_work_table(scan)?)
        } else if let Some(filter) = any.downcast_ref::<ExchangeFilterExec>() {
            Node::ExchangeFilter(wire::ExchangeFilterNode {
                filters: filter
                    .filters()
                    .iter()
                    .map(|expr| {
                        proto_converter
                            .physical_expr_to_proto(expr, self)
                            .map(|node| node.encode_to_vec())
                    })
                    .collect::<Result<_>>()?,
            })
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "Quiver cannot ship plan node {} to executors",
                node.name()
            )));
        };
        wire::ExtensionNode {
            node: Some(encoded),
        }
        .encode(buf)
        .map_err(|e| DataFusionError::Internal(format!("encoding Quiver plan node: {e}")))
    }
}

/// Encodes a stage plan for an executor.
fn encode_slice(slice: &ReadSlice) -> wire::ReadSlice {
    let producers = slice.producers.clone().unwrap_or(0..0);
    wire::ReadSlice {
        first_partition: slice.partitions.start,
        partition_count: slice.partitions.end - slice.partitions.start,
        first_producer: producers.start,
        producer_count: producers.end - producers.start,
    }
}

fn decode_slice(slice: &wire::ReadSlice) -> ReadSlice {
    let partitions =
        slice.first_partition..slice.first_partition.saturating_add(slice.partition_count);
    ReadSlice {
        partitions,
        producers: (slice.producer_count > 0).then(|| {
            slice.first_producer..slice.first_producer.saturating_add(slice.producer_count)
        }),
    }
}

pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    physical_plan_to_bytes_with_extension_codec(plan, &QuiverCodec)
}

/// Decodes a plan made by [`encode_plan`]. An expression the plan holds in several
/// places (a join's dynamic filter and the scan it filters) is decoded once and shared,
/// as it was before encoding.
pub fn decode_plan(bytes: &[u8], context: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    physical_plan_from_bytes_with_proto_converter(
        bytes,
        context,
        &QuiverCodec,
        &DeduplicatingProtoConverter {},
    )
}
