//! `lake transform`: incremental silver and gold tables.
//!
//! Models are SQL run by DataFusion over exact sets of Iceberg data files
//! (those the commit layer names as new, or those of the partitions being
//! rebuilt); results are written by `lake-table`'s writer and committed by
//! its producers, with the source snapshot consumed in the snapshot summary.
//!
//! - [`models`]: which table each model builds, its grain and SQL.
//! - [`transform`]: running silver and gold models incrementally.
//! - [`scan`]: DataFusion tables over exact file sets.

pub mod error;
pub mod models;
pub mod scan;
pub mod transform;

pub use error::{Error, Result};
pub use models::{GOLD, GoldModel, Grain, Models, SILVER, SilverModel};
pub use transform::{
    ModelReport, TransformOptions, gold_models, run_gold, run_silver, silver_models,
};
