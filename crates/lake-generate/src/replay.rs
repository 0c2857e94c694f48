//! `lake generate --from FILE`: records replayed from a file of one JSON
//! object per line, for any dataset — the same producer, rate limit and
//! summary as the generators. Lines go out byte for byte (a malformed line
//! stays malformed, so it can test a dataset's rejects table); each is keyed
//! by the dataset's key fields where it has them.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::generator::{Counts, Record};
use crate::run::Records;

/// Reads records from a newline-delimited JSON file.
pub struct Replay {
    lines: Box<dyn BufRead + Send>,
    path: PathBuf,
    /// Dotted paths of the fields whose values key a record.
    key_fields: Vec<Vec<String>>,
    label: String,
    line: Vec<u8>,
    key: Vec<u8>,
    counts: Counts,
}

impl Replay {
    /// Opens `path` (`-` is standard input); records are keyed by the
    /// values of `key_fields` (dotted paths), joined, and unkeyed when a
    /// line lacks them. `label` names the records in metrics.
    pub fn open(path: &Path, key_fields: &[String], label: &str) -> Result<Self> {
        let lines: Box<dyn BufRead + Send> = if path == Path::new("-") {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
            Box::new(std::io::BufReader::with_capacity(1 << 20, file))
        };
        Ok(Self {
            lines,
            path: path.to_path_buf(),
            key_fields: key_fields
                .iter()
                .map(|f| f.split('.').map(str::to_string).collect())
                .collect(),
            label: label.to_string(),
            line: Vec::with_capacity(4096),
            key: Vec::with_capacity(64),
            counts: Counts::default(),
        })
    }

    /// The key of `line`: the key fields' values, strings as they are and
    /// other values as JSON, joined by the unit separator; empty when the
    /// line is not a JSON object holding them all.
    fn key_of(&mut self) {
        self.key.clear();
        if self.key_fields.is_empty() {
            return;
        }
        let Ok(serde_json::Value::Object(record)) =
            serde_json::from_slice::<serde_json::Value>(&self.line)
        else {
            return;
        };
        let record = serde_json::Value::Object(record);
        let mut parts = Vec::with_capacity(self.key_fields.len());
        for path in &self.key_fields {
            let mut value = &record;
            for part in path {
                match value.get(part) {
                    Some(inner) => value = inner,
                    None => return,
                }
            }
            match value {
                serde_json::Value::String(s) => parts.push(s.clone()),
                serde_json::Value::Null => return,
                other => parts.push(other.to_string()),
            }
        }
        self.key.extend_from_slice(parts.join("\u{1f}").as_bytes());
    }
}

impl Records for Replay {
    fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        self.line.clear();
        let read = self
            .lines
            .read_until(b'\n', &mut self.line)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", self.path.display())))?;
        if read == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
        }
        self.key_of();
        self.counts.total += 1;
        Ok(Some(Record {
            key: &self.key,
            payload: &self.line,
            fault: crate::Fault::None,
        }))
    }

    fn counts(&self) -> Counts {
        self.counts
    }

    fn label(&self) -> &str {
        &self.label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_replay_byte_for_byte_keyed_by_the_dataset_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("orders.jsonl");
        std::fs::write(
            &path,
            "{\"order_id\":\"o1\",\"line_no\":2,\"x\":{\"y\":1}}\r\n{broken\n\n{\"order_id\":\"o2\"}\n",
        )
        .expect("file");
        let keys = ["order_id".to_string(), "line_no".to_string()];
        let mut replay = Replay::open(&path, &keys, "orders").expect("open");
        let mut seen = Vec::new();
        while let Some(record) = replay.next_record().expect("read") {
            seen.push((
                String::from_utf8_lossy(record.key).to_string(),
                String::from_utf8_lossy(record.payload).to_string(),
            ));
        }
        assert_eq!(
            seen,
            [
                (
                    "o1\u{1f}2".to_string(),
                    "{\"order_id\":\"o1\",\"line_no\":2,\"x\":{\"y\":1}}".to_string()
                ),
                (String::new(), "{broken".to_string()),
                (String::new(), String::new()),
                (String::new(), "{\"order_id\":\"o2\"}".to_string()),
            ]
        );
        assert_eq!(replay.counts().total, 4);
        let nested = Replay::open(&path, &["x.y".to_string()], "t");
        let mut nested = nested.expect("open");
        let first = nested.next_record().expect("read").expect("a record");
        assert_eq!(first.key, b"1");
    }
}
