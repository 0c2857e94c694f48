//! The Kafka positions of the new rows a silver run keeps.
//!
//! Silver's deduplication (models.rs) answers "which copy of each new key
//! is written" as a set of positions: the first copy of each key among the
//! new rows, where the key is not in silver or its quarantine yet. Joining
//! that answer back to the rows copied every column of every row a second
//! time (a hash join's output is gathered row by row, lists included);
//! instead the positions are collected here, a bitmap of offsets per Kafka
//! partition (offsets of a partition are dense, so ~2 bytes a row), and the
//! rows are kept by looking their coordinates up as they stream to the
//! writers, in the one filter that already splits clean from quarantined.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::DataType;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use roaring::RoaringTreemap;

use crate::error::{Error, Result};
use crate::models::PARTITION_SCALE;

#[derive(Debug, Default)]
pub(crate) struct FirstCopies {
    offsets: HashMap<i64, RoaringTreemap>,
}

impl FirstCopies {
    /// Runs `sql` (one `__lake_position` column, DECIMAL(38, 0)) and
    /// collects its positions as they stream.
    pub(crate) async fn collect(ctx: &SessionContext, model: &str, sql: &str) -> Result<Self> {
        let named = |source| Error::Model {
            model: model.to_string(),
            source,
        };
        let mut stream = ctx
            .sql(sql)
            .await
            .map_err(named)?
            .execute_stream()
            .await
            .map_err(named)?;
        let mut copies = FirstCopies::default();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(named)?;
            let positions = arrow_cast::cast(batch.column(0), &DataType::Decimal128(38, 0))?;
            let positions = positions.as_primitive::<arrow_array::types::Decimal128Type>();
            for position in positions.iter().flatten() {
                copies.insert(position)?;
            }
        }
        Ok(copies)
    }

    fn insert(&mut self, position: i128) -> Result<()> {
        let (partition, offset) = (
            position.div_euclid(PARTITION_SCALE),
            position.rem_euclid(PARTITION_SCALE),
        );
        let (Ok(partition), Ok(offset)) = (i64::try_from(partition), u64::try_from(offset)) else {
            return Err(Error::Internal(format!(
                "a Kafka position out of range: {position}"
            )));
        };
        self.offsets.entry(partition).or_default().insert(offset);
        Ok(())
    }

    /// How many rows the run keeps.
    pub(crate) fn len(&self) -> u64 {
        self.offsets.values().map(RoaringTreemap::len).sum()
    }

    /// Which rows of `batch` are first copies, by its `_kafka_partition`
    /// and `_kafka_offset` columns; a row without both is not.
    pub(crate) fn mask(
        &self,
        batch: &RecordBatch,
        partition: usize,
        offset: usize,
    ) -> Result<BooleanArray> {
        let partitions = arrow_cast::cast(batch.column(partition), &DataType::Int64)?;
        let offsets = arrow_cast::cast(batch.column(offset), &DataType::Int64)?;
        let (partitions, offsets) = (
            partitions.as_primitive::<Int64Type>(),
            offsets.as_primitive::<Int64Type>(),
        );
        // Rows arrive in runs of one partition: look its bitmap up once a run.
        let mut current: Option<(i64, Option<&RoaringTreemap>)> = None;
        let mut keep = Vec::with_capacity(batch.num_rows());
        for (p, o) in partitions.iter().zip(offsets.iter()) {
            let (Some(p), Some(o)) = (p, o) else {
                keep.push(false);
                continue;
            };
            let bitmap = match current {
                Some((q, bitmap)) if q == p => bitmap,
                _ => {
                    let bitmap = self.offsets.get(&p);
                    current = Some((p, bitmap));
                    bitmap
                }
            };
            keep.push(bitmap.is_some_and(|b| u64::try_from(o).is_ok_and(|o| b.contains(o))));
        }
        Ok(BooleanArray::from(keep))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, Int64Array};
    use arrow_schema::{Field, Schema};

    use super::*;

    #[test]
    fn positions_split_into_partition_and_offset() {
        let mut copies = FirstCopies::default();
        for (partition, offset) in [(0, 0), (0, 7), (3, i64::MAX), (127, 5)] {
            copies
                .insert(i128::from(partition) * PARTITION_SCALE + i128::from(offset))
                .expect("in range");
        }
        copies.insert(7).expect("in range");
        assert_eq!(copies.len(), 4, "a position seen twice counts once");
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("_kafka_partition", DataType::Int32, true),
                Field::new("_kafka_offset", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![
                    Some(0),
                    Some(0),
                    Some(0),
                    Some(3),
                    Some(127),
                    Some(5),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(0),
                    Some(1),
                    Some(7),
                    Some(i64::MAX),
                    Some(5),
                    Some(5),
                    Some(0),
                ])),
            ],
        )
        .expect("batch");
        let keep = copies.mask(&batch, 0, 1).expect("mask");
        assert_eq!(
            keep.iter().collect::<Vec<_>>(),
            [true, false, true, true, true, false, false].map(Some)
        );
    }
}
