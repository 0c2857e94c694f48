//! Datasets as files: what each topic holds and how it travels through
//! bronze, silver and gold, declared in a pipeline directory a data engineer
//! writes by hand, with no Rust to change.
//!
//! ```text
//! pipeline/
//!   datasets/
//!     <name>/dataset.toml   topic, key, event time, payload schema, bronze and
//!                           silver settings, quality rules
//!            silver.sql     the silver model: SELECT … FROM bronze
//!            gold/*.sql     gold models, each with a `-- lake:` header line
//! ```
//!
//! The seeds' two datasets (tweets, speedtest) are such folders, shipped in
//! the binary: they are the pipeline when no directory is given, and
//! [`write_examples`] (`lake init`) writes them out to copy and change.
//! Loading checks everything a file alone can tell (types, keys, event time,
//! tables, rules, headers) and reports every problem with its file and line;
//! checking the SQL against the schemas is lake-transform's part.

mod dataset;
mod gold;
pub mod types;

/// The columns lake adds to every bronze table beside the payload's: what
/// a silver model may read besides the dataset's own fields.
pub mod columns {
    /// Field ids of lake's bronze columns start here, far above payload
    /// ids, so new payload fields never collide with them.
    pub const FIRST_ID: i32 = 1000;
    /// The record as it arrived (a string).
    pub const RAW: &str = "_raw";
    pub const TOPIC: &str = "_kafka_topic";
    pub const PARTITION: &str = "_kafka_partition";
    pub const OFFSET: &str = "_kafka_offset";
    pub const KAFKA_TIMESTAMP: &str = "_kafka_timestamp";
    pub const INGESTED_AT: &str = "_ingested_at";
    /// The event time as a timestamp, where the payload holds epoch
    /// seconds or milliseconds.
    pub const EVENT_TIME: &str = "_event_time";
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dataset::{
    Action, BronzeSpec, DatasetSpec, EventTime, GoldSpec, Granularity, Protection,
    RETENTION_PROPERTY, Rule, SilverSpec, TARGET_FILE_SIZE_PROPERTY, TimeFormat, Upkeep, find,
};
pub use gold::HEADER as GOLD_HEADER;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One thing wrong in a pipeline: the file, the line where known, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn new(file: &str, line: Option<usize>, message: String) -> Self {
        Self {
            file: file.to_string(),
            line,
            message,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem a check found, one per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Why a pipeline could not be loaded or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline's files say something that cannot work.
    #[error("{0}")]
    Invalid(Problems),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset name the pipeline does not have.
    #[error("no dataset `{name}` in {pipeline}; it has {known}")]
    UnknownDataset {
        name: String,
        pipeline: String,
        known: String,
    },
    /// `lake init` would overwrite files.
    #[error("{} already exists; pass --force to overwrite, or choose another directory", .0.display())]
    Exists(PathBuf),
}

/// Where a pipeline came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The seeds' datasets shipped in the binary.
    BuiltIn,
    Dir(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("the built-in pipeline (tweets, speedtest)"),
            Source::Dir(dir) => write!(f, "the pipeline in {}", dir.display()),
        }
    }
}

/// The datasets lake works on.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub source: Source,
    pub datasets: Vec<Arc<DatasetSpec>>,
}

/// The directory looked for when none is configured.
pub const DEFAULT_DIR: &str = "pipeline";

macro_rules! shipped {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../pipeline/", $path)))),*]
    };
}

/// The seeds' pipeline, file by file.
const BUILT_IN: &[(&str, &str)] = shipped!(
    "datasets/tweets/dataset.toml",
    "datasets/tweets/silver.sql",
    "datasets/tweets/gold/popular_hashtags_by_hour.sql",
    "datasets/tweets/gold/active_users_by_day.sql",
    "datasets/tweets/gold/tweet_volume_by_region.sql",
    "datasets/tweets/gold/tweet_metrics_by_language.sql",
    "datasets/speedtest/dataset.toml",
    "datasets/speedtest/silver.sql",
    "datasets/speedtest/gold/speedtest_agg.sql",
);

/// The names of the shipped example datasets.
pub fn examples() -> Vec<&'static str> {
    let mut names: Vec<&str> = BUILT_IN
        .iter()
        .filter_map(|(path, _)| path.strip_prefix("datasets/")?.split('/').next())
        .collect();
    names.dedup();
    names
}

/// One dataset's files, relative to its folder.
struct Folder {
    name: String,
    /// How files of the folder are named in messages.
    prefix: String,
    files: Vec<(String, String)>,
}

impl Folder {
    fn file(&self, relative: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(path, _)| path == relative)
            .map(|(_, text)| text.as_str())
    }
}

impl Pipeline {
    /// The seeds' two datasets.
    pub fn built_in() -> Result<Self> {
        let mut folders: Vec<Folder> = Vec::new();
        for (path, text) in BUILT_IN {
            let Some(rest) = path.strip_prefix("datasets/") else {
                continue;
            };
            let Some((name, relative)) = rest.split_once('/') else {
                continue;
            };
            match folders.iter_mut().find(|f| f.name == name) {
                Some(folder) => folder.files.push((relative.into(), (*text).into())),
                None => folders.push(Folder {
                    name: name.into(),
                    prefix: format!("built-in datasets/{name}"),
                    files: vec![(relative.into(), (*text).into())],
                }),
            }
        }
        Self::from_folders(Source::BuiltIn, folders)
    }

    /// The pipeline in `dir` (`dir/datasets/<name>/…`).
    pub fn load(dir: &Path) -> Result<Self> {
        let datasets = dir.join("datasets");
        let entries = std::fs::read_dir(&datasets).map_err(|source| Error::Read {
            path: datasets.clone(),
            source,
        })?;
        let mut folders = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: datasets.clone(),
                source,
            })?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let mut files = Vec::new();
            for relative in ["dataset.toml", "silver.sql"] {
                let file = path.join(relative);
                if file.is_file() {
                    files.push((relative.to_string(), read(&file)?));
                }
            }
            let gold = path.join("gold");
            if gold.is_dir() {
                let mut models: Vec<PathBuf> = std::fs::read_dir(&gold)
                    .map_err(|source| Error::Read {
                        path: gold.clone(),
                        source,
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "sql"))
                    .collect();
                models.sort();
                for model in models {
                    let file_name = model.file_name().map(|n| n.to_string_lossy().to_string());
                    if let Some(file_name) = file_name {
                        files.push((format!("gold/{file_name}"), read(&model)?));
                    }
                }
            }
            folders.push(Folder {
                name,
                prefix: path.display().to_string(),
                files,
            });
        }
        folders.sort_by(|a, b| a.name.cmp(&b.name));
        if folders.is_empty() {
            return Err(Error::Invalid(Problems(vec![Problem::new(
                &datasets.display().to_string(),
                None,
                "holds no dataset folder (datasets/<name>/dataset.toml); `lake init` writes \
                 examples"
                    .into(),
            )])));
        }
        Self::from_folders(Source::Dir(dir.to_path_buf()), folders)
    }

    /// The configured pipeline: `dir` when given, else `./pipeline` when it
    /// exists, else the built-in one.
    pub fn resolve(dir: Option<&Path>) -> Result<Self> {
        match dir {
            Some(dir) => Self::load(dir),
            None if Path::new(DEFAULT_DIR).join("datasets").is_dir() => {
                Self::load(Path::new(DEFAULT_DIR))
            }
            None => Self::built_in(),
        }
    }

    fn from_folders(source: Source, folders: Vec<Folder>) -> Result<Self> {
        let mut problems = Problems::default();
        let mut datasets = Vec::new();
        for folder in &folders {
            let file = |relative: &str| format!("{}/{relative}", folder.prefix);
            let valid_name = !folder.name.is_empty()
                && folder
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                problems.push(Problem::new(
                    &folder.prefix,
                    None,
                    "a dataset's folder name is its name: lower-case letters, digits and `_`"
                        .into(),
                ));
                continue;
            }
            let Some(toml) = folder.file("dataset.toml") else {
                problems.push(Problem::new(
                    &file("dataset.toml"),
                    None,
                    "missing: every dataset folder has a dataset.toml".into(),
                ));
                continue;
            };
            let mut gold = Vec::new();
            for (relative, sql) in &folder.files {
                let Some(model) = relative
                    .strip_prefix("gold/")
                    .and_then(|f| f.strip_suffix(".sql"))
                else {
                    continue;
                };
                match gold::parse(model, &file(relative), sql) {
                    Ok(spec) => gold.push(spec),
                    Err(found) => problems.extend(found),
                }
            }
            let silver = folder
                .file("silver.sql")
                .map(|sql| (file("silver.sql"), sql.to_string()));
            match dataset::parse(&folder.name, &file("dataset.toml"), toml, silver, gold) {
                Ok(spec) => datasets.push(Arc::new(spec)),
                Err(found) => problems.extend(found),
            }
        }
        // Across datasets: one writer per table, one dataset per topic.
        let mut tables: Vec<(String, String, String)> = Vec::new();
        let mut topics: Vec<(String, String)> = Vec::new();
        for spec in &datasets {
            let mut written = spec.tables();
            let rejects = spec.rejects_table();
            written.push((&rejects, "its rejects table".to_string()));
            for (table, what) in written {
                let table = table.to_string();
                match tables.iter().find(|(t, _, _)| *t == table) {
                    Some((_, other, other_what)) => problems.push(Problem::new(
                        &spec.file,
                        None,
                        format!(
                            "{table} is written by dataset `{other}` ({other_what}) and by this \
                             one ({what}): two datasets cannot write one table"
                        ),
                    )),
                    None => tables.push((table, spec.name.clone(), what)),
                }
            }
            match topics.iter().find(|(t, _)| *t == spec.topic) {
                Some((_, other)) => problems.push(Problem::new(
                    &spec.file,
                    None,
                    format!(
                        "topic `{}` is also the topic of dataset `{other}`: ingest routes a \
                         topic to one bronze table",
                        spec.topic
                    ),
                )),
                None => topics.push((spec.topic.clone(), spec.name.clone())),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        Ok(Self { source, datasets })
    }

    /// The dataset called `name`.
    pub fn dataset(&self, name: &str) -> Result<&Arc<DatasetSpec>> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| Error::UnknownDataset {
                name: name.to_string(),
                pipeline: self.source.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The datasets called `names`, or all when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<Arc<DatasetSpec>>> {
        if names.is_empty() {
            return Ok(self.datasets.clone());
        }
        names
            .iter()
            .map(|name| self.dataset(name).cloned())
            .collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.datasets.iter().map(|d| d.name.as_str()).collect()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the shipped datasets `names` (all when empty) under
/// `dir/datasets/`, for `lake init`; refuses to overwrite a file unless
/// `force`. Returns the files written.
pub fn write_examples(dir: &Path, names: &[String], force: bool) -> Result<Vec<PathBuf>> {
    let known = examples();
    for name in names {
        if !known.contains(&name.as_str()) {
            return Err(Error::UnknownDataset {
                name: name.clone(),
                pipeline: Source::BuiltIn.to_string(),
                known: known.join(", "),
            });
        }
    }
    let chosen = |path: &str| {
        names.is_empty()
            || names
                .iter()
                .any(|n| path.starts_with(&format!("datasets/{n}/")))
    };
    let files: Vec<(PathBuf, &str)> = BUILT_IN
        .iter()
        .filter(|(path, _)| chosen(path))
        .map(|(path, text)| (dir.join(path), *text))
        .collect();
    if !force && let Some((existing, _)) = files.iter().find(|(path, _)| path.exists()) {
        return Err(Error::Exists(existing.clone()));
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(path, text).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

#[cfg(test)]
mod tests;
