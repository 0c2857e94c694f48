//! Query results as a text table, CSV, a JSON array or JSON lines.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Writes `batches` to `out`. An empty result still shows its columns
/// (table, CSV) or is an empty array (JSON).
pub fn write_batches(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> Result<()> {
    let empty = [RecordBatch::new_empty(schema.clone())];
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let batches = if rows == 0 { &empty[..] } else { batches };
    match format {
        Format::Table => {
            let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{text}")?;
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json if rows == 0 => writeln!(out, "[]")?,
        Format::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
            writeln!(out)?;
        }
        Format::Jsonl => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs)?;
            writer.finish()?;
        }
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn sample() -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("tag", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["rust", "a,b"])),
                Arc::new(Int64Array::from(vec![3, 1])),
            ],
        )
        .expect("batch");
        (schema, batch)
    }

    fn render(format: Format, batches: &[RecordBatch]) -> String {
        let (schema, _) = sample();
        let mut out = Vec::new();
        write_batches(&mut out, &schema, batches, format).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn each_format_renders_rows_and_empty_results() {
        let (_, batch) = sample();
        let rows = std::slice::from_ref(&batch);
        assert_eq!(render(Format::Csv, rows), "tag,n\nrust,3\n\"a,b\",1\n");
        assert_eq!(
            render(Format::Json, rows),
            "[{\"tag\":\"rust\",\"n\":3},{\"tag\":\"a,b\",\"n\":1}]\n"
        );
        assert_eq!(
            render(Format::Jsonl, rows),
            "{\"tag\":\"rust\",\"n\":3}\n{\"tag\":\"a,b\",\"n\":1}\n"
        );
        assert!(render(Format::Table, rows).contains("| rust | 3 |"));
        assert_eq!(render(Format::Csv, &[]), "tag,n\n");
        assert_eq!(render(Format::Json, &[]), "[]\n");
        assert_eq!(render(Format::Jsonl, &[]), "");
        assert!(render(Format::Table, &[]).contains("| tag | n |"));
    }
}
