//! Small building blocks for realistic shapes: Zipf-like popularity, heavy
//! tails, ids and timestamps written without per-record allocation.

use rand::{Rng, RngExt};

/// Draws ranks 0..n with probability proportional to 1/(rank+1)^s.
#[derive(Clone, Debug)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(s);
            cdf.push(total);
        }
        for value in &mut cdf {
            *value /= total;
        }
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf
            .partition_point(|&c| c < u)
            .min(self.cdf.len().saturating_sub(1))
    }
}

/// Picks an index by integer weights.
#[derive(Clone, Debug)]
pub(crate) struct Weighted {
    cumulative: Vec<u32>,
}

impl Weighted {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { cumulative }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1).max(1);
        let pick = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= pick)
    }
}

/// A Lomax (Pareto II) draw: most values small, a few enormous.
pub(crate) fn heavy_tail(rng: &mut impl Rng, scale: f64, alpha: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    scale * (u.powf(-1.0 / alpha) - 1.0)
}

/// A standard normal draw (Box–Muller; one value per call keeps the stream
/// simple to reason about for reproducibility).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A random (version 4) UUID in its 36-character text form.
pub(crate) fn uuid(rng: &mut impl Rng) -> [u8; 36] {
    let bytes: [u8; 16] = rng.random();
    let mut text = [0u8; 36];
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    text
}

/// Formats microsecond timestamps as RFC 3339 UTC with milliseconds
/// (`2026-01-01T12:34:56.789Z`), caching the date-hour-minute prefix.
#[derive(Debug, Default)]
pub(crate) struct TimestampFormat {
    minute: Option<i64>,
    prefix: String,
}

impl TimestampFormat {
    pub fn write(&mut self, micros: i64, out: &mut String) {
        let minute = micros.div_euclid(60_000_000);
        if self.minute != Some(minute) {
            self.prefix = jiff::Timestamp::from_microsecond(minute * 60_000_000)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:").to_string())
                .unwrap_or_else(|_| "1970-01-01T00:00:".to_string());
            self.minute = Some(minute);
        }
        let within = micros.rem_euclid(60_000_000);
        let seconds = within / 1_000_000;
        let millis = (within % 1_000_000) / 1000;
        out.push_str(&self.prefix);
        push_padded(out, seconds as u32, 2);
        out.push('.');
        push_padded(out, millis as u32, 3);
        out.push('Z');
    }
}

fn push_padded(out: &mut String, value: u32, width: usize) {
    let digits = value.to_string();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    #[test]
    fn zipf_favours_the_head() {
        let zipf = Zipf::new(1000, 1.1);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        assert!(counts[0] > 10_000, "{}", counts[0]);
    }

    #[test]
    fn weighted_respects_weights() {
        let weighted = Weighted::new([1, 0, 3]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[weighted.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((counts[2] as f64 / counts[0] as f64 - 3.0).abs() < 0.2);
    }

    #[test]
    fn timestamps_are_rfc3339_with_millis() {
        let mut format = TimestampFormat::default();
        let mut out = String::new();
        format.write(1_767_225_600_000_000 + 61_234_567, &mut out);
        assert_eq!(out, "2026-01-01T00:01:01.234Z");
        out.clear();
        format.write(1_767_225_600_000_000 + 61_999_999, &mut out);
        assert_eq!(out, "2026-01-01T00:01:01.999Z");
        out.clear();
        format.write(1_136_073_599_000_000, &mut out);
        assert_eq!(out, "2005-12-31T23:59:59.000Z");
    }

    #[test]
    fn heavy_tail_has_a_long_tail() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let mut draws: Vec<f64> = (0..10_000)
            .map(|_| heavy_tail(&mut rng, 100.0, 1.2))
            .collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[5_000];
        let top = draws[9_999];
        assert!(
            median < 200.0 && top > 50_000.0,
            "median {median}, max {top}"
        );
    }
}
