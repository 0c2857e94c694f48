//! Speed tests (seed 002): testers in a fixed set of cities, each city with
//! its own download, upload and latency profile; a few locations arrive with
//! stray case and spaces, as hand-typed data does.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;

use crate::faults::InvalidKind;
use crate::shape::{self, normal};

pub(crate) const NUMERIC_FIELDS: &[&str] = &["upload_speed", "download_speed", "latency"];
pub(crate) const REQUIRED_FIELDS: &[&str] = &["timestamp", "user_id"];

const INVALID_KINDS: [InvalidKind; 4] = [
    InvalidKind::MissingMeasurement,
    InvalidKind::SpeedOutOfRange,
    InvalidKind::LatencyOutOfRange,
    InvalidKind::MissingLocation,
];

/// A city and its network: median download (Mbps), upload as a share of
/// download, median latency (ms).
pub struct City {
    pub name: &'static str,
    pub download: f64,
    pub upload_share: f64,
    pub latency: f64,
}

/// The cities and their profiles.
pub const CITIES: &[City] = &[
    City {
        name: "New York",
        download: 240.0,
        upload_share: 0.35,
        latency: 18.0,
    },
    City {
        name: "San Francisco",
        download: 310.0,
        upload_share: 0.45,
        latency: 14.0,
    },
    City {
        name: "Toronto",
        download: 190.0,
        upload_share: 0.30,
        latency: 20.0,
    },
    City {
        name: "London",
        download: 150.0,
        upload_share: 0.25,
        latency: 22.0,
    },
    City {
        name: "Berlin",
        download: 120.0,
        upload_share: 0.30,
        latency: 24.0,
    },
    City {
        name: "Paris",
        download: 260.0,
        upload_share: 0.60,
        latency: 16.0,
    },
    City {
        name: "Tokyo",
        download: 380.0,
        upload_share: 0.70,
        latency: 12.0,
    },
    City {
        name: "Singapore",
        download: 420.0,
        upload_share: 0.75,
        latency: 10.0,
    },
    City {
        name: "Mumbai",
        download: 70.0,
        upload_share: 0.80,
        latency: 38.0,
    },
    City {
        name: "São Paulo",
        download: 95.0,
        upload_share: 0.40,
        latency: 32.0,
    },
    City {
        name: "Lagos",
        download: 28.0,
        upload_share: 0.50,
        latency: 65.0,
    },
    City {
        name: "Sydney",
        download: 85.0,
        upload_share: 0.25,
        latency: 30.0,
    },
];

#[derive(Serialize)]
struct SpeedtestOut<'a> {
    timestamp: i64,
    user_id: &'a str,
    upload_speed: Option<f64>,
    download_speed: Option<f64>,
    latency: Option<f64>,
    location: Option<&'a str>,
}

struct Tester {
    id: String,
    city: usize,
    /// A household's line is better or worse than its city's median.
    line: f64,
}

pub(crate) struct SpeedtestModel {
    testers: Vec<Tester>,
    location: String,
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

impl SpeedtestModel {
    pub fn new(seed: u64, tester_count: usize) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5350_4545_4454);
        let testers = (0..tester_count.max(1))
            .map(|_| {
                let id = shape::uuid(&mut rng);
                Tester {
                    id: String::from_utf8_lossy(&id).into_owned(),
                    city: rng.random_range(0..CITIES.len()),
                    line: (0.35 * normal(&mut rng)).exp(),
                }
            })
            .collect();
        Self {
            testers,
            location: String::with_capacity(32),
        }
    }

    /// Writes one speed test as JSON into `out`; returns the user id (the key).
    pub fn write<'a>(
        &'a mut self,
        rng: &mut impl Rng,
        event_micros: i64,
        invalid: Option<InvalidKind>,
        out: &mut Vec<u8>,
    ) -> &'a str {
        let tester = &self.testers[rng.random_range(0..self.testers.len())];
        let city = &CITIES[tester.city];
        let download = city.download * tester.line * (0.3 * normal(rng)).exp();
        let upload = download * city.upload_share * (0.25 * normal(rng)).exp();
        let latency = city.latency / tester.line.sqrt() * (0.3 * normal(rng)).exp();
        let mut download = Some(round2(download));
        let mut upload = Some(round2(upload));
        let mut latency = Some(round2(latency));

        self.location.clear();
        match rng.random_range(0..100u8) {
            0 => self.location.push_str(&city.name.to_lowercase()),
            1 => self.location.push_str(&city.name.to_uppercase()),
            2 => {
                self.location.push_str("  ");
                self.location.push_str(city.name);
                self.location.push(' ');
            }
            _ => self.location.push_str(city.name),
        }
        let mut location = Some(self.location.as_str());
        match invalid {
            Some(InvalidKind::MissingMeasurement) => {
                if rng.random_bool(0.5) {
                    download = None;
                } else {
                    upload = None;
                }
            }
            Some(InvalidKind::SpeedOutOfRange) => {
                download = Some(if rng.random_bool(0.5) {
                    -round2(rng.random_range(1.0..100.0))
                } else {
                    round2(rng.random_range(10_001.0..99_999.0))
                });
            }
            Some(InvalidKind::LatencyOutOfRange) => {
                latency = Some(round2(rng.random_range(10_001.0..60_000.0)))
            }
            Some(InvalidKind::MissingLocation) => location = None,
            _ => {}
        }
        let record = SpeedtestOut {
            timestamp: event_micros.div_euclid(1000),
            user_id: &tester.id,
            upload_speed: upload,
            download_speed: download,
            latency,
            location,
        };
        let _ = serde_json::to_writer(&mut *out, &record);
        &tester.id
    }

    pub fn invalid_kind(rng: &mut impl Rng) -> InvalidKind {
        INVALID_KINDS[rng.random_range(0..INVALID_KINDS.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cities_keep_their_profiles() {
        let mut model = SpeedtestModel::new(9, 5000);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let mut by_city: std::collections::HashMap<String, Vec<f64>> = Default::default();
        let mut out = Vec::new();
        for _ in 0..20_000 {
            out.clear();
            model.write(&mut rng, 1_767_225_600_000_000, None, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let city = v["location"].as_str().unwrap().trim().to_lowercase();
            by_city
                .entry(city)
                .or_default()
                .push(v["download_speed"].as_f64().unwrap());
        }
        let median = |city: &str| {
            let mut d = by_city[city].clone();
            d.sort_by(f64::total_cmp);
            d[d.len() / 2]
        };
        assert!(median("singapore") > 3.0 * median("mumbai"));
        assert!(median("lagos") < median("berlin"));
    }
}
