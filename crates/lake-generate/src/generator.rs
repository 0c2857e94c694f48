//! The record stream: one dataset model, an event clock, and the fault
//! schedule, all driven by one seeded generator so the same settings give
//! the same bytes.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::faults::{Fault, FaultRates, InvalidKind, Schedule, malform};
use crate::speedtest::{self, SpeedtestModel};
use crate::tweets::{self, TweetModel};

/// Recent records a duplicate may repeat.
const RECENT: usize = 1024;
/// Event times scatter this far (µs) around the clock, as real streams do.
const JITTER_MICROS: i64 = 200_000;

/// The streams lake generates: the seeds' datasets. A dataset names one in
/// its `dataset.toml` (`generator = "tweets"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Seed 000: a Twitter-like stream.
    Tweets,
    /// Seed 002: network speed tests.
    Speedtest,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Stream::Tweets, Stream::Speedtest];

    pub fn name(self) -> &'static str {
        match self {
            Stream::Tweets => "tweets",
            Stream::Speedtest => "speedtest",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The field whose value keys a generated record's Kafka message: the
    /// user, so one user's records stay in order on one partition.
    pub fn key_field(self) -> &'static str {
        match self {
            Stream::Tweets => "user.user_id",
            Stream::Speedtest => "user_id",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    pub stream: Stream,
    pub seed: u64,
    /// Event time of the first record, microseconds since the epoch.
    pub start_micros: i64,
    /// Event-time pace: records per second of event time.
    pub events_per_second: f64,
    /// Users (tweets) or testers (speed tests).
    pub population: usize,
    pub faults: FaultRates,
    pub late_by: Duration,
}

impl GeneratorConfig {
    pub fn new(stream: Stream, seed: u64, start_micros: i64) -> Self {
        Self {
            stream,
            seed,
            start_micros,
            events_per_second: 1000.0,
            population: 50_000,
            faults: FaultRates::default(),
            late_by: Duration::from_secs(2 * 3600),
        }
    }
}

/// One record, borrowed from its source's buffers.
#[derive(Debug)]
pub struct Record<'a> {
    /// The Kafka key (the user id of generated records); empty for none.
    pub key: &'a [u8],
    /// The JSON payload (broken, for malformed records).
    pub payload: &'a [u8],
    pub fault: Fault,
}

/// How many records of each kind were generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub late: u64,
    pub invalid: u64,
}

enum Model {
    Tweets(Box<TweetModel>),
    Speedtest(SpeedtestModel),
}

impl Model {
    fn write(
        &mut self,
        rng: &mut Xoshiro256PlusPlus,
        micros: i64,
        invalid: Option<InvalidKind>,
        out: &mut Vec<u8>,
        key: &mut Vec<u8>,
    ) {
        let user = match self {
            Model::Tweets(m) => m.write(rng, micros, invalid, out),
            Model::Speedtest(m) => m.write(rng, micros, invalid, out),
        };
        key.clear();
        key.extend_from_slice(user.as_bytes());
    }

    fn invalid_kind(&self, rng: &mut Xoshiro256PlusPlus) -> InvalidKind {
        match self {
            Model::Tweets(_) => TweetModel::invalid_kind(rng),
            Model::Speedtest(_) => SpeedtestModel::invalid_kind(rng),
        }
    }

    fn fields(&self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Model::Tweets(_) => (tweets::NUMERIC_FIELDS, tweets::REQUIRED_FIELDS),
            Model::Speedtest(_) => (speedtest::NUMERIC_FIELDS, speedtest::REQUIRED_FIELDS),
        }
    }
}

/// Generates records one at a time.
pub struct Generator {
    config: GeneratorConfig,
    rng: Xoshiro256PlusPlus,
    model: Model,
    index: u64,
    malformed: Schedule,
    duplicates: Schedule,
    late: Schedule,
    invalid: Schedule,
    recent: Vec<(Vec<u8>, Vec<u8>)>,
    recent_next: usize,
    key: Vec<u8>,
    payload: Vec<u8>,
    counts: Counts,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let model = match config.stream {
            Stream::Tweets => {
                Model::Tweets(Box::new(TweetModel::new(config.seed, config.population)))
            }
            Stream::Speedtest => {
                Model::Speedtest(SpeedtestModel::new(config.seed, config.population))
            }
        };
        let faults = config.faults;
        Self {
            malformed: Schedule::new(faults.malformed, &mut rng),
            duplicates: Schedule::new(faults.duplicates, &mut rng),
            late: Schedule::new(faults.late, &mut rng),
            invalid: Schedule::new(faults.invalid, &mut rng),
            rng,
            model,
            index: 0,
            recent: Vec::with_capacity(RECENT),
            recent_next: 0,
            key: Vec::with_capacity(64),
            payload: Vec::with_capacity(1024),
            counts: Counts::default(),
            config,
        }
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The next record. Faults due at the same position queue up behind
    /// each other (malformed, then duplicate, late, invalid).
    pub fn next_record(&mut self) -> Record<'_> {
        let index = self.index;
        self.index += 1;
        self.counts.total += 1;

        if !self.malformed.due(index) && self.duplicates.due(index) && !self.recent.is_empty() {
            self.duplicates.consume(&mut self.rng);
            self.counts.duplicates += 1;
            let (key, payload) = &self.recent[self.rng.random_range(0..self.recent.len())];
            self.key.clone_from(key);
            self.payload.clone_from(payload);
            return Record {
                key: &self.key,
                payload: &self.payload,
                fault: Fault::Duplicate,
            };
        }

        let pace = 1e6 / self.config.events_per_second.max(1e-3);
        let mut micros = self.config.start_micros
            + (index as f64 * pace) as i64
            + self.rng.random_range(-JITTER_MICROS..=JITTER_MICROS);
        let mut fault = Fault::None;
        let mut invalid = None;
        if self.malformed.due(index) {
            // Decided after writing, below.
        } else if self.late.due(index) {
            self.late.consume(&mut self.rng);
            self.counts.late += 1;
            micros -= self.config.late_by.as_micros() as i64;
            fault = Fault::Late;
        } else if self.invalid.due(index) {
            self.invalid.consume(&mut self.rng);
            self.counts.invalid += 1;
            let kind = self.model.invalid_kind(&mut self.rng);
            invalid = Some(kind);
            fault = Fault::Invalid(kind);
        }

        self.payload.clear();
        self.model.write(
            &mut self.rng,
            micros,
            invalid,
            &mut self.payload,
            &mut self.key,
        );

        if self.malformed.due(index) {
            self.malformed.consume(&mut self.rng);
            self.counts.malformed += 1;
            let (numeric, required) = self.model.fields();
            let kind = malform(&mut self.payload, &mut self.rng, numeric, required);
            fault = Fault::Malformed(kind);
        } else if self.recent.len() < RECENT {
            self.recent.push((self.key.clone(), self.payload.clone()));
        } else {
            let slot = &mut self.recent[self.recent_next];
            slot.0.clone_from(&self.key);
            slot.1.clone_from(&self.payload);
            self.recent_next = (self.recent_next + 1) % RECENT;
        }
        Record {
            key: &self.key,
            payload: &self.payload,
            fault,
        }
    }
}
