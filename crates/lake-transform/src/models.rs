//! The silver and gold models: which table each builds from which, at what
//! grain, and the SQL that computes it (shipped in the binary; a models
//! directory given with `--models` overrides any file it holds).

use std::path::{Path, PathBuf};

use arrow_schema::{DataType, TimeUnit};
use lake_core::datasets::Dataset;

use crate::error::{Error, Result};

/// A silver model: new bronze rows → clean rows and quarantined rows.
#[derive(Clone, Copy, Debug)]
pub struct SilverModel {
    pub dataset: Dataset,
    /// `silver.<name>`.
    pub target: &'static str,
    pub quarantine: &'static str,
    /// The model's SQL file, relative to a models directory.
    pub file: &'static str,
    /// The clean table's event time; it is partitioned by its day.
    pub time_column: &'static str,
    /// The columns that identify a row across the whole table, with their
    /// types (for the `existing` input before the tables exist).
    pub keys: &'static [(&'static str, KeyType)],
    /// Columns whose values are (nearly) all distinct: written without a
    /// dictionary or min/max statistics.
    pub distinct: &'static [&'static str],
}

#[derive(Clone, Copy, Debug)]
pub enum KeyType {
    String,
    Timestamp,
}

impl KeyType {
    pub fn data_type(self) -> DataType {
        match self {
            KeyType::String => DataType::Utf8,
            KeyType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        }
    }
}

/// How finely a gold table is partitioned and rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub fn seconds(self) -> i64 {
        match self {
            Grain::Hour => 3_600,
            Grain::Day => 86_400,
        }
    }
}

/// A gold model: the silver rows of the affected hours or days → aggregates
/// that replace those partitions.
#[derive(Clone, Copy, Debug)]
pub struct GoldModel {
    pub dataset: Dataset,
    pub target: &'static str,
    pub file: &'static str,
    /// The gold table's time column (partitioned by it at `grain`).
    pub time_column: &'static str,
    pub grain: Grain,
}

pub const SILVER: [SilverModel; 2] = [
    SilverModel {
        dataset: Dataset::Tweets,
        target: "silver.tweets_clean",
        quarantine: "silver.tweets_quarantine",
        file: "silver/tweets_clean.sql",
        time_column: "created_at",
        keys: &[("tweet_id", KeyType::String)],
        distinct: &["tweet_id", "text"],
    },
    SilverModel {
        dataset: Dataset::Speedtest,
        target: "silver.speedtest_clean",
        quarantine: "silver.speedtest_quarantine",
        file: "silver/speedtest_clean.sql",
        time_column: "ts",
        keys: &[("user_id", KeyType::String), ("ts", KeyType::Timestamp)],
        distinct: &[],
    },
];

pub const GOLD: [GoldModel; 5] = [
    GoldModel {
        dataset: Dataset::Tweets,
        target: "gold.popular_hashtags_by_hour",
        file: "gold/popular_hashtags_by_hour.sql",
        time_column: "hour",
        grain: Grain::Hour,
    },
    GoldModel {
        dataset: Dataset::Tweets,
        target: "gold.active_users_by_day",
        file: "gold/active_users_by_day.sql",
        time_column: "day",
        grain: Grain::Day,
    },
    GoldModel {
        dataset: Dataset::Tweets,
        target: "gold.tweet_volume_by_region",
        file: "gold/tweet_volume_by_region.sql",
        time_column: "hour",
        grain: Grain::Hour,
    },
    GoldModel {
        dataset: Dataset::Tweets,
        target: "gold.tweet_metrics_by_language",
        file: "gold/tweet_metrics_by_language.sql",
        time_column: "day",
        grain: Grain::Day,
    },
    GoldModel {
        dataset: Dataset::Speedtest,
        target: "gold.speedtest_agg",
        file: "gold/speedtest_agg.sql",
        time_column: "date",
        grain: Grain::Day,
    },
];

/// The silver model of `dataset`.
pub fn silver_model(dataset: Dataset) -> SilverModel {
    match dataset {
        Dataset::Tweets => SILVER[0],
        Dataset::Speedtest => SILVER[1],
    }
}

const EMBEDDED: [(&str, &str); 7] = [
    (
        "silver/tweets_clean.sql",
        include_str!("../models/silver/tweets_clean.sql"),
    ),
    (
        "silver/speedtest_clean.sql",
        include_str!("../models/silver/speedtest_clean.sql"),
    ),
    (
        "gold/popular_hashtags_by_hour.sql",
        include_str!("../models/gold/popular_hashtags_by_hour.sql"),
    ),
    (
        "gold/active_users_by_day.sql",
        include_str!("../models/gold/active_users_by_day.sql"),
    ),
    (
        "gold/tweet_volume_by_region.sql",
        include_str!("../models/gold/tweet_volume_by_region.sql"),
    ),
    (
        "gold/tweet_metrics_by_language.sql",
        include_str!("../models/gold/tweet_metrics_by_language.sql"),
    ),
    (
        "gold/speedtest_agg.sql",
        include_str!("../models/gold/speedtest_agg.sql"),
    ),
];

/// Where model SQL comes from.
#[derive(Clone, Debug, Default)]
pub struct Models {
    dir: Option<PathBuf>,
}

impl Models {
    /// The shipped models, overridden file by file from `dir`.
    pub fn new(dir: Option<&Path>) -> Result<Self> {
        if let Some(dir) = dir
            && !dir.is_dir()
        {
            return Err(Error::Models(format!(
                "--models {}: not a directory (expected silver/*.sql and gold/*.sql)",
                dir.display()
            )));
        }
        Ok(Models {
            dir: dir.map(Path::to_path_buf),
        })
    }

    /// The SQL of `file` (e.g. `gold/speedtest_agg.sql`).
    pub fn sql(&self, file: &str) -> Result<String> {
        if let Some(dir) = &self.dir {
            let path = dir.join(file);
            if path.exists() {
                return std::fs::read_to_string(&path)
                    .map_err(|e| Error::Models(format!("{}: {e}", path.display())));
            }
        }
        EMBEDDED
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, sql)| (*sql).to_string())
            .ok_or_else(|| Error::Models(format!("no model {file}")))
    }

    /// Every shipped model file with its SQL, for `lake transform models`.
    pub fn shipped() -> impl Iterator<Item = (&'static str, &'static str)> {
        EMBEDDED.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_has_shipped_sql() {
        let models = Models::default();
        for file in SILVER
            .iter()
            .map(|m| m.file)
            .chain(GOLD.iter().map(|m| m.file))
        {
            assert!(models.sql(file).unwrap().contains("SELECT"), "{file}");
        }
        assert_eq!(Models::shipped().count(), SILVER.len() + GOLD.len());
    }

    #[test]
    fn a_models_directory_overrides_only_the_files_it_has() {
        let dir = std::env::temp_dir().join(format!("lake-models-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("gold")).unwrap();
        std::fs::write(dir.join("gold/speedtest_agg.sql"), "SELECT 1 AS x").unwrap();
        let models = Models::new(Some(&dir)).unwrap();
        assert_eq!(
            models.sql("gold/speedtest_agg.sql").unwrap(),
            "SELECT 1 AS x"
        );
        assert!(
            models
                .sql("silver/tweets_clean.sql")
                .unwrap()
                .contains("tweet_id")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Models::new(Some(&dir)).is_err());
    }
}
