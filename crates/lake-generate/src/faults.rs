//! Injected faults: which records are duplicates, malformed, late or invalid,
//! and how a well-formed record is broken.
//!
//! Faults are spaced rather than drawn independently: the gap to the next one
//! is uniform in [0.5/rate, 1.5/rate], so the count over N records is N·rate
//! within a few, while positions still look random. Same seed, same positions.

use rand::{Rng, RngExt};

/// How often each fault occurs, as a fraction of records sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// Exact re-sends of an earlier record (same id, same bytes).
    pub duplicates: f64,
    /// Records that are not valid for the bronze schema.
    pub malformed: f64,
    /// Records whose event time lies `late_by` in the past.
    pub late: f64,
    /// Well-formed records whose values break a quality rule (out-of-range
    /// score, negative count, impossible time, missing measurement).
    pub invalid: f64,
}

impl FaultRates {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("duplicates", self.duplicates),
            ("malformed", self.malformed),
            ("late", self.late),
            ("invalid", self.invalid),
        ] {
            if !(0.0..=0.5).contains(&rate) || rate.is_nan() {
                return Err(format!("--{name} must be between 0 and 0.5, not {rate}"));
            }
        }
        Ok(())
    }
}

/// What, if anything, is wrong with a generated record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    None,
    Duplicate,
    Late,
    Invalid(InvalidKind),
    Malformed(MalformedKind),
}

/// How a malformed record is broken. Each fails bronze decoding in its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// The JSON text stops part-way: not parseable as JSON at all.
    Truncated,
    /// Valid JSON, but the named field holds a non-numeric string where a
    /// number or list belongs.
    WrongType(&'static str),
    /// Valid JSON without the named required field.
    MissingField(&'static str),
}

/// Which quality rule an invalid record breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    SentimentOutOfRange,
    NegativeCount,
    TimeBefore2006,
    TimeInFuture,
    MissingMeasurement,
    SpeedOutOfRange,
    LatencyOutOfRange,
    MissingLocation,
}

/// One fault type's next position.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    rate: f64,
    next: u64,
}

impl Schedule {
    pub fn new(rate: f64, rng: &mut impl Rng) -> Self {
        let mut schedule = Self {
            rate,
            next: u64::MAX,
        };
        if rate > 0.0 {
            schedule.next = schedule.gap(rng);
        }
        schedule
    }

    fn gap(&self, rng: &mut impl Rng) -> u64 {
        let mean = 1.0 / self.rate;
        rng.random_range(0.5 * mean..1.5 * mean).round().max(1.0) as u64
    }

    /// True when the fault is due at `index` (or was due and postponed).
    pub fn due(&self, index: u64) -> bool {
        self.next <= index
    }

    /// Marks the due fault as used; the next one follows one gap later.
    pub fn consume(&mut self, rng: &mut impl Rng) {
        self.next = self.next.saturating_add(self.gap(rng));
    }
}

/// Breaks a serialized record. `candidates` lists, per kind, the fields the
/// dataset allows: numeric fields for wrong types, required fields to drop.
pub(crate) fn malform(
    json: &mut Vec<u8>,
    rng: &mut impl Rng,
    numeric_fields: &[&'static str],
    required_fields: &[&'static str],
) -> MalformedKind {
    match rng.random_range(0..3u8) {
        0 => {
            // Cut somewhere inside the object; at least the closing brace goes.
            let cut = rng.random_range(1..json.len().max(2) - 1);
            json.truncate(cut);
            MalformedKind::Truncated
        }
        1 => {
            let field = numeric_fields[rng.random_range(0..numeric_fields.len())];
            if replace_value(json, field, b"\"not-a-number\"") {
                MalformedKind::WrongType(field)
            } else {
                json.truncate(json.len() / 2);
                MalformedKind::Truncated
            }
        }
        _ => {
            let field = required_fields[rng.random_range(0..required_fields.len())];
            if remove_field(json, field) {
                MalformedKind::MissingField(field)
            } else {
                json.truncate(json.len() / 2);
                MalformedKind::Truncated
            }
        }
    }
}

/// Span of `"field":value` (value without the following comma) in `json`,
/// for flat values (numbers, strings without escaped quotes, null).
fn field_span(json: &[u8], field: &str) -> Option<(usize, usize, usize)> {
    let needle = format!("\"{field}\":");
    let start = find(json, needle.as_bytes())?;
    let value_start = start + needle.len();
    let mut end = value_start;
    if json.get(end) == Some(&b'"') {
        end += 1;
        while *json.get(end)? != b'"' {
            end += 1;
        }
        end += 1;
    } else if json.get(end) == Some(&b'[') {
        while *json.get(end)? != b']' {
            end += 1;
        }
        end += 1;
    } else {
        while !matches!(json.get(end)?, b',' | b'}') {
            end += 1;
        }
    }
    Some((start, value_start, end))
}

fn replace_value(json: &mut Vec<u8>, field: &str, value: &[u8]) -> bool {
    match field_span(json, field) {
        Some((_, value_start, end)) => {
            json.splice(value_start..end, value.iter().copied());
            true
        }
        None => false,
    }
}

fn remove_field(json: &mut Vec<u8>, field: &str) -> bool {
    match field_span(json, field) {
        Some((start, _, end)) => {
            // Take the comma on one side with it, keeping the object valid.
            let (from, to) = if json.get(end) == Some(&b',') {
                (start, end + 1)
            } else if start > 0 && json[start - 1] == b',' {
                (start - 1, end)
            } else {
                (start, end)
            };
            json.drain(from..to);
            true
        }
        None => false,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    #[test]
    fn spaced_faults_hit_the_rate_closely() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for rate in [0.001, 0.01, 0.1] {
            let mut schedule = Schedule::new(rate, &mut rng);
            let mut hits = 0u64;
            for i in 0..100_000 {
                if schedule.due(i) {
                    hits += 1;
                    schedule.consume(&mut rng);
                }
            }
            let expected = 100_000.0 * rate;
            assert!(
                (hits as f64 - expected).abs() <= expected * 0.05,
                "rate {rate}: {hits} hits"
            );
        }
        assert!(!Schedule::new(0.0, &mut rng).due(u64::MAX - 1));
    }

    #[test]
    fn malformations_are_what_they_claim() {
        let original = br#"{"id":"a","n":12,"s":"x","l":["a","b"],"t":"2026-01-01T00:00:00Z"}"#;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut json = original.to_vec();
            let kind = malform(&mut json, &mut rng, &["n", "l"], &["id", "t"]);
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&json);
            match kind {
                MalformedKind::Truncated => assert!(parsed.is_err()),
                MalformedKind::WrongType(field) => {
                    assert_eq!(parsed.unwrap()[field], "not-a-number");
                }
                MalformedKind::MissingField(field) => {
                    let value = parsed.unwrap();
                    assert!(value.get(field).is_none());
                    assert_eq!(value.as_object().unwrap().len(), 4);
                }
            }
            seen.insert(std::mem::discriminant(&kind));
        }
        assert_eq!(seen.len(), 3);
    }
}
