//! Command-line grammar. Every flag here only overrides a configuration key;
//! the same setting can live in `lake.toml` or a `LAKE_…` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lake_core::config::{LogFormat, Overrides, Role};

const GLOBAL: &str = "Global options";

/// The variable the catalog token is read from (the configuration layer's name
/// for `catalog.token`).
pub const TOKEN_ENV: &str = "LAKE_CATALOG__TOKEN";

const AFTER_HELP: &str = "\
Configuration is layered: built-in defaults, then lake.toml (or --config),
then LAKE_* environment variables (LAKE_CATALOG__TOKEN, LAKE_STORAGE__S3__ENDPOINT,
`__` between levels), then flags. `lake config show` prints the result.

Exit codes: 0 success; 1 the command failed while running; 2 the command line or the
configuration is wrong; 3 a commit's outcome is unknown (the catalog failed after the
request was sent and could not be asked afterwards): check the table before retrying.";

/// lake: a Kafka → Iceberg medallion pipeline (bronze → silver → gold) on one binary.
#[derive(Debug, Parser)]
#[command(name = "lake", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: ./lake.toml when present]
    #[arg(long, global = true, help_heading = GLOBAL, env = "LAKE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Iceberg REST catalog URI (catalog.uri)
    // `--catalog` was this flag's first name; it stays as a hidden alias so
    // scripts keep working, while help shows a name Trino's `--catalog NAME`
    // cannot be mistaken for.
    #[arg(
        long = "catalog-uri",
        alias = "catalog",
        global = true,
        help_heading = GLOBAL,
        value_name = "URI"
    )]
    pub catalog_uri: Option<String>,

    /// Catalog API key sent as a bearer token (catalog.token); the variable
    /// keeps it out of shell history and process lists
    // The configuration layer reads the same variable; clap names it here so
    // `--help` shows it, and `main` drops a value clap took from it.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "KEY",
        env = TOKEN_ENV,
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Log format (telemetry.log_format); filter with RUST_LOG
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464 (telemetry.metrics_addr)
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Serve /health and /ready on this address while a long-running command
    /// (ingest, catalog serve, continuous generate) runs, e.g. 0.0.0.0:8080
    /// (telemetry.health_addr)
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Push metrics to this Prometheus Pushgateway when the command ends, e.g.
    /// http://pushgateway:9091 (telemetry.push_gateway)
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "URL")]
    pub push_gateway: Option<String>,

    /// The pipeline directory declaring the datasets (pipeline.dir) [default:
    /// ./pipeline when it exists, else the built-in tweets and speedtest]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR")]
    pub pipeline: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(value: LogFormatArg) -> Self {
        match value {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run or check the Iceberg REST catalog
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Inspect the effective configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write the shipped datasets into a pipeline directory, to copy and change
    Init(InitArgs),
    /// Check a pipeline directory: every file, type, key, rule and model
    Validate,
    /// Generate the tweet or speed-test stream, or replay a file, into Kafka or a file
    Generate(Box<GenerateArgs>),
    /// Ingest Kafka topics into bronze Iceberg tables, exactly once
    Ingest(Box<IngestArgs>),
    /// Build silver and gold tables incrementally from bronze
    Transform(TransformArgs),
    /// Keep bronze, silver and gold current in one process: ingest, and a transform on every commit
    Run(Box<RunArgs>),
    /// Rewrite small data files into files near the target size
    Compact(CompactArgs),
    /// Expire snapshots, remove orphan files, merge manifests, apply retention
    #[command(subcommand)]
    Maintain(MaintainCommand),
    /// The whole pipeline on this machine with no services: Kafka → bronze → silver → gold
    Quickstart(QuickstartArgs),
    /// Query every table with SQL (DataFusion), now or as of a snapshot or time
    Sql(SqlArgs),
    /// Every table: rows, files, size, snapshots, last commit
    Tables(ListArgs),
    /// A table's snapshots, oldest first
    Snapshots(SnapshotsArgs),
    /// Every table, and how far silver and gold trail the tables they are built from
    Status(ListArgs),
    /// Print a shell completion script, e.g. `lake completions bash > /etc/bash_completion.d/lake`
    Completions(CompletionsArgs),
}

impl Command {
    /// Commands that print their own results log only warnings by default;
    /// the embedded catalog's request log would bury them.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Quickstart(_)
            | Command::Sql(_)
            | Command::Tables(_)
            | Command::Snapshots(_)
            | Command::Status(_)
            | Command::Init(_)
            | Command::Completions(_)
            | Command::Validate => "warn",
            _ => "info",
        }
    }

    /// The name a command's metrics are pushed under, one per kind of step, so
    /// that a push replaces the previous run of the same step only.
    pub fn metrics_job(&self) -> String {
        let value = |v: Option<clap::builder::PossibleValue>| {
            v.map_or_else(String::new, |v| format!("_{}", v.get_name()))
        };
        match self {
            Command::Catalog(_) => "lake_catalog".into(),
            Command::Config(_) => "lake_config".into(),
            Command::Init(_) => "lake_init".into(),
            Command::Validate => "lake_validate".into(),
            Command::Generate(args) => match &args.dataset {
                Some(dataset) => format!("lake_generate_{dataset}"),
                None => "lake_generate".into(),
            },
            Command::Ingest(_) => "lake_ingest".into(),
            Command::Run(_) => "lake_run".into(),
            Command::Transform(args) => {
                format!("lake_transform{}", value(args.layer.to_possible_value()))
            }
            Command::Compact(_) => "lake_compact".into(),
            Command::Maintain(command) => format!("lake_maintain_{}", command.name()),
            Command::Quickstart(_) => "lake_quickstart".into(),
            Command::Sql(_) | Command::Tables(_) | Command::Snapshots(_) | Command::Status(_) => {
                "lake_query".into()
            }
            Command::Completions(_) => "lake_completions".into(),
        }
    }
}

/// `lake completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  lake completions bash > ~/.local/share/bash-completion/completions/lake
  lake completions zsh > \"${fpath[1]}/_lake\"
  lake completions fish > ~/.config/fish/completions/lake.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Reading the catalog `lake quickstart` keeps in a directory, without a server.
#[derive(Debug, Args)]
pub struct EmbeddedArg {
    /// Read the embedded catalog `lake quickstart` writes (in DIR, default
    /// ./lake-data) instead of a catalog server
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "./lake-data"
    )]
    pub embedded: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned columns for a terminal
    Table,
    /// RFC 4180 with a header row
    Csv,
    /// One JSON array of objects
    Json,
    /// One JSON object per line
    Jsonl,
}

impl From<FormatArg> for lake_query::Format {
    fn from(value: FormatArg) -> Self {
        match value {
            FormatArg::Table => lake_query::Format::Table,
            FormatArg::Csv => lake_query::Format::Csv,
            FormatArg::Json => lake_query::Format::Json,
            FormatArg::Jsonl => lake_query::Format::Jsonl,
        }
    }
}

/// `lake quickstart`.
#[derive(Debug, Args)]
#[command(after_help = "\
Starts, inside this process, the catalog on an embedded database, a local warehouse (both
under --data-dir) and librdkafka's mock Kafka cluster; generates tweets and speed tests
(1 % duplicates, 0.5 % malformed, 1 % late, 0.5 % breaking a quality rule), ingests them until
caught up, builds silver and gold, compacts, and prints what came out.

Running it again adds a new batch to the same tables (the mock cluster starts empty each
time, so each run reads topics of its own). Afterwards, read the tables with --embedded:
  lake sql --embedded \"SELECT * FROM gold.popular_hashtags_by_hour ORDER BY tweet_count DESC LIMIT 10\"
  lake status --embedded")]
pub struct QuickstartArgs {
    /// Tweets and speed tests to generate, each
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Where the catalog database and the warehouse live
    #[arg(long, value_name = "DIR", default_value = "./lake-data")]
    pub data_dir: PathBuf,

    /// Seed of the generated data [default: a new one each run]
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `lake sql`.
#[derive(Debug, Args)]
#[command(after_help = "\
Every table of every namespace is there as namespace.table, read at one snapshot for the
whole query (the current one, or the one --as-of picks). Only reading statements run.

Examples:
  lake sql \"SELECT hashtag, sum(tweet_count) AS n FROM gold.popular_hashtags_by_hour GROUP BY 1 ORDER BY n DESC LIMIT 10\"
  lake sql --format csv \"SELECT * FROM silver.speedtest_clean\" > speedtests.csv
  lake sql --as-of 2026-01-01T12:00:00Z \"SELECT count(*) FROM bronze.tweets_raw\"
  lake sql --as-of 4711471147114711 \"SELECT count(*) FROM silver.tweets_clean\"
  lake sql \"SHOW TABLES\"
  echo \"SELECT 1\" | lake sql -")]
pub struct SqlArgs {
    /// The query; `-` reads it from standard input
    pub query: String,

    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: FormatArg,

    /// Read the tables as of a snapshot id (that table at that snapshot, every
    /// other table as of its commit time) or a time (2026-01-01T10:00:00Z, 2026-01-01)
    #[arg(long, value_name = "SNAPSHOT_ID|TIME")]
    pub as_of: Option<String>,

    #[command(flatten)]
    pub embedded: EmbeddedArg,
}

/// `lake tables` and `lake status`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: FormatArg,

    #[command(flatten)]
    pub embedded: EmbeddedArg,
}

/// `lake snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// The table, as namespace.table
    #[arg(value_name = "TABLE")]
    pub table: String,

    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: FormatArg,

    #[command(flatten)]
    pub embedded: EmbeddedArg,
}

/// Which tables a maintenance command works on.
#[derive(Debug, Args)]
pub struct TableSelection {
    /// Tables, as namespace.table
    #[arg(
        value_name = "TABLE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub tables: Vec<String>,

    /// Every table of every namespace
    #[arg(long)]
    pub all: bool,
}

/// `lake maintain`.
#[derive(Debug, Subcommand)]
pub enum MaintainCommand {
    /// Remove old snapshots, then delete every file only they reached
    #[command(after_help = "\
A snapshot is kept when it is younger than --older-than, among the last --retain-last of the
main branch, pointed at by a branch or tag, or at/after the bronze (or silver) snapshot a
silver (or gold) table last consumed: the next incremental transform starts there. After the
removal is committed, every manifest list, manifest and data file the table reached before and
no longer reaches is deleted; a file a kept snapshot needs is never deleted.

Examples:
  lake maintain expire-snapshots --all --dry-run
  lake maintain expire-snapshots bronze.tweets_raw --older-than 2d --retain-last 10")]
    ExpireSnapshots {
        #[command(flatten)]
        tables: TableSelection,
        /// Snapshots older than this may expire
        #[arg(long, value_name = "AGE", default_value = "5d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Newest snapshots kept whatever their age
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        retain_last: u32,
        /// List what would be removed and deleted, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete files under a table's location that nothing references
    #[command(after_help = "\
Lists the table's location and deletes every file that no snapshot, manifest or metadata file
references and that was last modified before --older-than: leftovers of failed or abandoned
writes. Younger files may belong to a commit in flight and are left alone; thresholds under an
hour are refused without --force.

Examples:
  lake maintain remove-orphan-files --all --dry-run
  lake maintain remove-orphan-files bronze.tweets_raw --older-than 1d")]
    RemoveOrphanFiles {
        #[command(flatten)]
        tables: TableSelection,
        /// Only files last modified before now minus this
        #[arg(long, value_name = "AGE", default_value = "3d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Accept --older-than under an hour (no writer may be running)
        #[arg(long)]
        force: bool,
        /// List the orphans, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Merge the current snapshot's small manifests into one per partition spec
    RewriteManifests {
        #[command(flatten)]
        tables: TableSelection,
        /// Count the manifests, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete whole partitions older than each table's retention
    #[command(after_help = "\
The retention is the table property lake.retention (e.g. `30d`, or `none`), else the layer's
default: bronze 30 days, silver 90, gold 365. A partition goes when its whole time range (from
the hour/day/month/year partitioning its files were written under: bronze by Kafka record time,
silver and gold by event time) ended before now minus the retention; its files
are removed in one `delete` commit (the rows stay readable in older snapshots until they expire).

Examples:
  lake maintain retention --all --dry-run
  lake maintain retention bronze.tweets_raw")]
    Retention {
        #[command(flatten)]
        tables: TableSelection,
        /// List the partitions, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// The daily policy on every table: retention, compaction, manifests, expiry, orphans
    #[command(after_help = "\
In order, on every table of every namespace: retention; compaction (towards each table's
target size or --target-file-size, --min-input-files 5); rewrite-manifests; expire-snapshots (--older-than, --retain-last);
remove-orphan-files (--orphans-older-than). One table failing does not stop the others; the
exit code is 1 if any failed. This is the task the Airflow DAG runs daily.")]
    All {
        /// Snapshots older than this may expire
        #[arg(long, value_name = "AGE", default_value = "5d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Newest snapshots kept whatever their age
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        retain_last: u32,
        /// Orphan files last modified before now minus this are deleted
        #[arg(long, value_name = "AGE", default_value = "3d", value_parser = humantime::parse_duration)]
        orphans_older_than: std::time::Duration,
        /// Size compacted files aim at [default: each table's write.target-file-size-bytes, else 512MiB]
        #[arg(long, value_name = "SIZE")]
        target_file_size: Option<bytesize::ByteSize>,
        /// Report what each step would do, change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

impl MaintainCommand {
    /// The subcommand's name, with `_` for `-`.
    pub fn name(&self) -> &'static str {
        match self {
            MaintainCommand::ExpireSnapshots { .. } => "expire_snapshots",
            MaintainCommand::RemoveOrphanFiles { .. } => "remove_orphan_files",
            MaintainCommand::RewriteManifests { .. } => "rewrite_manifests",
            MaintainCommand::Retention { .. } => "retention",
            MaintainCommand::All { .. } => "all",
        }
    }
}

/// `lake compact`.
#[derive(Debug, Args)]
#[command(after_help = "\
Per partition, data files under 75 % of the target size (--target-file-size, else the
table's write.target-file-size-bytes, which a dataset's target_file_size sets, else 512 MiB)
are packed (largest first) into groups of at most that size; each group with at least
--min-input-files files is read, written anew (compressed as the table's
write.parquet.compression-codec and -level say, which a dataset's compression and
compression_level set, else zstd level 1; columns the table writes without dictionary are
copied page by page from files of that codec and level) and swapped in by one `replace`
commit. Ingest and transforms may run at the same time: a replace rebases over their
appends, and rows are never lost or doubled. A group whose input was removed meanwhile
(another compaction) is skipped and its new files deleted. Tables with row-level delete
files are left alone.

Each group commits on its own by default (--groups-per-commit 1), so a long compaction keeps
what it finished and never holds back ingest; --groups-per-commit 0 commits a table at once.
--where picks the files a scan with that filter would read (by partition and column ranges).

Examples:
  lake compact bronze.tweets_raw --dry-run        # the groups it would rewrite
  lake compact --all                              # every table of every namespace
  lake compact silver.tweets_clean --target-file-size 128MiB --min-input-files 2
  lake compact bronze.tweets_raw --where \"created_at < '2026-01-02'\" --sort-by user_id")]
pub struct CompactArgs {
    #[command(flatten)]
    pub tables: TableSelection,

    /// Size the rewritten files aim at [default: the table's write.target-file-size-bytes, else 512MiB]
    #[arg(long, value_name = "SIZE")]
    pub target_file_size: Option<bytesize::ByteSize>,

    /// Rewrite a group only when it holds at least this many files
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    pub min_input_files: u32,

    /// Groups rewritten at the same time [default: one per CPU core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: Option<u32>,

    /// Only files that may hold rows matching these comparisons (joined by
    /// AND), e.g. "created_at >= '2026-01-01' AND created_at < '2026-01-02'"
    #[arg(long = "where", value_name = "FILTER")]
    pub filter: Option<String>,

    /// Commit after every N rewritten groups; 0 commits each table's groups at once
    // Hidden alias: the first name, which Spark's rewrite_data_files uses for
    // something else (a switch, with the group count in another option).
    #[arg(
        long,
        alias = "partial-progress",
        value_name = "N",
        default_value_t = 1
    )]
    pub groups_per_commit: u32,

    /// Sort each group's rows by these columns, so files cover narrow ranges
    #[arg(long, value_name = "COLUMN", value_delimiter = ',')]
    pub sort_by: Vec<String>,

    /// List the groups, change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `lake transform`.
#[derive(Debug, Args)]
#[command(after_help = "\
silver: each dataset's silver.sql runs over the bronze rows appended since the last run; lake
keeps the first copy of each silver key (the copy read first from Kafka) and drops keys already
in the silver table or its quarantine. Existing keys are read from the files whose event times
come within the dataset's dedup_horizon (default 1d) of a day the new rows fall in: a re-sent
record keeps its event time, so it is always caught, and the run reads a few days of silver,
not all of it (--exhaustive-dedup reads every key). Rows that break a rule of dataset.toml go to the
quarantine with the rule's name (or are dropped, or counted, as the rule says). Clean and
quarantined rows are committed together with the bronze snapshot consumed, so a rerun with
nothing new commits nothing and a crash never doubles a row. A backlog of more bronze rows than
--silver-rows-per-commit (a first run after a long ingest) is taken in steps of whole bronze
snapshots, each committed before the next is read.

gold: the hours and days that received silver rows since the last run (late rows included)
are aggregated again by each gold/*.sql and replace exactly those gold partitions, in one
overwrite commit per table. A rebuild over more silver rows than --gold-rows-per-query runs as
several queries over consecutive hours or days, one after the other, before that one commit.

The datasets come from the pipeline directory (--pipeline, ./pipeline) or, without one, the
built-in tweets and speedtest; `lake init` writes those out to change.

Examples:
  lake transform all                             # silver, then gold, every dataset
  lake transform silver --dataset tweets --fail-on-quarantine-ratio 0.05
  lake transform models                          # the SQL each model runs
  lake --pipeline ./pipeline transform all       # your own datasets")]
pub struct TransformArgs {
    /// What to build
    #[arg(value_enum)]
    pub layer: LayerArg,

    /// Only this dataset's tables [default: every dataset of the pipeline]
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    /// Replaced by --pipeline DIR (`lake init` writes the shipped datasets to edit)
    #[arg(long, value_name = "DIR", hide = true)]
    pub models: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub tuning: TransformTuning,

    /// With `models`: write each model's SQL into this directory
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// How silver and gold are built, for `lake transform` and `lake run`.
#[derive(Debug, Args)]
pub struct TransformTuning {
    /// Fail, committing nothing, when more than this share of a silver commit's rows break a
    /// rule (the steps of a backlog committed before it stay)
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub fail_on_quarantine_ratio: Option<f64>,

    /// Check new keys against every key in silver and its quarantine, not only those within
    /// the dataset's dedup_horizon
    #[arg(long)]
    pub exhaustive_dedup: bool,

    /// About how many silver rows one gold query reads: rebuilding more hours or days (a first
    /// build, a backfill) runs several queries one after the other and commits once, so memory
    /// follows this, not the table
    #[arg(long, value_name = "ROWS", default_value_t = lake_transform::DEFAULT_GOLD_ROWS_PER_QUERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub gold_rows_per_query: u64,

    /// About how many bronze rows one silver commit takes: a larger backlog (a first run, a
    /// long pause) runs in steps of whole bronze snapshots, each committed before the next is
    /// read, so memory follows this, not the backlog, and a failure keeps the steps before it
    #[arg(long, value_name = "ROWS", default_value_t = lake_transform::DEFAULT_SILVER_ROWS_PER_COMMIT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub silver_rows_per_commit: u64,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{text}` is not a ratio between 0 and 1 (0.05 = 5 %)"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayerArg {
    /// Bronze → silver (+ quarantine)
    Silver,
    /// Silver → gold
    Gold,
    /// Silver, then gold
    All,
    /// Print (or with --out, write) the SQL each model runs
    Models,
}

/// `lake init`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes DIR/datasets/<name>/ for each example: dataset.toml (topic, key, event time, payload
schema, bronze and silver settings, quality rules), silver.sql and gold/*.sql — the datasets
lake runs when no pipeline directory is given. Copy one to declare your own topic; `lake
validate` checks what you wrote, and docs/datasets.md describes every key.

Examples:
  lake init                                # ./pipeline with tweets and speedtest
  lake init --example speedtest my-pipeline
  lake --pipeline my-pipeline validate")]
pub struct InitArgs {
    /// Where to write the pipeline
    #[arg(value_name = "DIR", default_value = "pipeline")]
    pub dir: PathBuf,

    /// Which shipped dataset to write
    #[arg(long, value_enum, default_value = "all")]
    pub example: ExampleArg,

    /// Overwrite files that exist
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExampleArg {
    Tweets,
    Speedtest,
    All,
}

/// `lake ingest`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each dataset's topic lands in its bronze table (built in: tweets -> bronze.tweets_raw,
speedtest_raw -> bronze.speedtest_raw; else as its dataset.toml says), created if missing and
partitioned by the hour (or day) of the Kafka record timestamp (not the payload's time, which a
broken client can set to anything), with the raw record and its Kafka coordinates.
Records that cannot be stored (invalid JSON or UTF-8, wrong types, a missing `not null` field,
too large, empty) go to bronze.<table>_rejects with the reason, in the same atomic commit as the
data.

Exactly once: every commit records the next Kafka offset of each partition in the table's
snapshot, and consumption always starts from the table, so a crash, a restart or a
consumer-group rebalance neither loses nor duplicates a record. Run several processes with
the same --group-id to share the partitions.

Examples:
  lake ingest                                  # both datasets, until Ctrl-C
  lake ingest tweets --until-caught-up         # what is in the topic now, then exit (Airflow)
  lake ingest tweets --until-caught-up --group-protocol consumer   # Kafka 4+: no 3 s join wait
  lake ingest speedtest --topic speedtest=speed.raw --table speedtest=bronze.speed
  lake ingest -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN -X sasl.username=…")]
pub struct IngestArgs {
    /// Datasets to ingest [default: every dataset of the pipeline]
    #[arg(value_name = "DATASET")]
    pub datasets: Vec<String>,

    /// Kafka bootstrap servers (kafka.brokers) [default: localhost:9092]
    #[arg(long, value_name = "HOST:PORT,…")]
    pub brokers: Option<String>,

    /// Read a dataset from another topic, repeatable: --topic tweets=my_tweets
    #[arg(long, value_name = "DATASET=TOPIC", value_parser = lake_kafka::parse_property)]
    pub topic: Vec<(String, String)>,

    /// Write a dataset to another table, repeatable: --table tweets=bronze.tw
    #[arg(long, value_name = "DATASET=NS.TABLE", value_parser = lake_kafka::parse_property)]
    pub table: Vec<(String, String)>,

    /// Consumer group; processes sharing it share the partitions
    #[arg(long, default_value = "lake-ingest")]
    pub group_id: String,

    /// How the group shares partitions out (librdkafka's group.protocol)
    #[arg(long, value_enum, default_value = "classic")]
    pub group_protocol: GroupProtocolArg,

    /// Commit at least this often [default: 10s; 5s for `lake run`]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub commit_interval: Option<std::time::Duration>,

    /// Commit once this much payload has arrived (e.g. 256MiB)
    #[arg(long, value_name = "SIZE")]
    pub commit_bytes: Option<bytesize::ByteSize>,

    /// Commit once this many records have arrived
    #[arg(long, value_name = "N")]
    pub commit_records: Option<u64>,

    /// Larger records go to the dead-letter table
    #[arg(long, default_value = "1MiB", value_name = "SIZE")]
    pub max_record_bytes: bytesize::ByteSize,

    /// Stop once the end offsets seen at start are reached and committed
    #[arg(long)]
    pub until_caught_up: bool,

    /// Stop after this many records
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    /// Add new top-level JSON fields to the table as optional columns
    #[arg(long)]
    pub evolve_schema: bool,

    /// On Ctrl-C or SIGTERM, the final commit must finish within this long
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: std::time::Duration,

    /// Any librdkafka property, repeatable: -X isolation.level=read_uncommitted
    ///
    /// These win over lake's consumer defaults: a 32 MiB prefetch
    /// (queued.max.messages.kbytes=32768) looked at again 10 ms after it
    /// fills (fetch.queue.backoff.ms=10), and for classic groups roundrobin
    /// assignment with a 10 s session. docs/operations.md lists them all.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = lake_kafka::parse_property)]
    pub property: Vec<(String, String)>,

    /// Give up when no broker answers within this long
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,

    /// While the catalog or its storage is down, keep starting over from the
    /// tables' offsets for this long before exiting (0s: exit at once)
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_budget: std::time::Duration,
}

/// `lake run`.
#[derive(Debug, Args)]
#[command(after_help = "\
One process keeps the whole medallion current. Ingest runs as `lake ingest` does; every bronze
commit starts a round of `lake transform all` (silver, then gold, over what is new), so a record
reaches gold within about one commit interval plus one round. Between rounds the small files this
leaves in bronze and silver are merged up to --compact-target (`lake maintain all` merges
further, daily); gold needs none, as each round overwrites the partitions it rebuilds.

Every step commits atomically with what it consumed, as the separate commands do: a kill at any
moment, then a restart, leaves every table exact. Ctrl-C or SIGTERM commits what was read and
carries it to gold within --shutdown-timeout.

Freshness: each silver and gold commit records the newest Kafka record timestamp that reached it
(`lake.newest-record-ms`, and its age as `lake.freshness-ms`); `lake status` shows it as
freshness_s, and --metrics-addr serves lake_table_freshness_seconds{table}.

Examples:
  lake run                                       # every dataset, until Ctrl-C
  lake --health-addr 0.0.0.0:9465 --metrics-addr 0.0.0.0:9464 run tweets
  lake run tweets --commit-interval 2s           # fresher, more small files between compactions
  lake run tweets --until-caught-up              # what is in the topic now, through gold, then exit")]
pub struct RunArgs {
    #[command(flatten)]
    pub ingest: IngestArgs,

    #[command(flatten)]
    pub tuning: TransformTuning,

    /// Size the run merges bronze's and silver's small files up to
    #[arg(long, default_value = "128MiB", value_name = "SIZE")]
    pub compact_target: bytesize::ByteSize,

    /// Merge small files once this many of a partition fit in one target-sized file
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub compact_min_files: usize,

    /// Look for small files to merge at most this often (after a round)
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub compact_every: std::time::Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GroupProtocolArg {
    /// Every broker; a new group waits the broker's initial rebalance delay (3 s)
    Classic,
    /// KIP-848, Kafka 4.0+: no initial delay, incremental rebalances, broker-side session timeout
    Consumer,
}

impl From<GroupProtocolArg> for lake_ingest::GroupProtocol {
    fn from(value: GroupProtocolArg) -> Self {
        match value {
            GroupProtocolArg::Classic => Self::Classic,
            GroupProtocolArg::Consumer => Self::Consumer,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyArg {
    User,
    None,
}

/// `lake generate`.
#[derive(Debug, Args)]
#[command(after_help = "\
The built-in streams are the seeds' (tweets, speedtest); a dataset of your pipeline names one
with `generator = \"tweets\"`, or is fed from a file with --from.

Examples:
  # 1000 tweets/s into Kafka until Ctrl-C, with 1% duplicates and late records:
  lake generate tweets --brokers localhost:9092 --duplicates 0.01 --late 0.01

  # As fast as possible, exactly 1M records, reproducible:
  lake generate speedtest --rate 0 --count 1000000 --seed 42 --start 2026-01-01T00:00:00Z

  # To a file (newline-delimited JSON) instead of Kafka; `-` is stdout:
  lake generate tweets --count 10000 --out tweets.jsonl

  # Replay a file of your own records, 500 a second, keyed by the dataset's key:
  lake --pipeline ./pipeline generate orders --from orders.jsonl --rate 500

Same --seed and --start (and the same fault settings) give byte-identical output.
Malformed records are broken one of three ways: truncated JSON, a non-numeric string
in a numeric or list field, or a missing required field (id or event time). --from sends
each line as it is, malformed ones included.")]
pub struct GenerateArgs {
    /// Which dataset: a built-in stream, or a dataset of the pipeline (with --from)
    #[arg(value_name = "DATASET", required_unless_present = "from")]
    pub dataset: Option<String>,

    /// Send the lines of this file (newline-delimited JSON, `-` is stdin)
    /// instead of generating
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "seed", "start", "events_per_second", "duplicates", "malformed", "late", "invalid"
    ])]
    pub from: Option<PathBuf>,

    /// Kafka bootstrap servers (kafka.brokers) [default: localhost:9092]
    #[arg(long, value_name = "HOST:PORT,…")]
    pub brokers: Option<String>,

    /// Topic [default: the dataset's]
    #[arg(long)]
    pub topic: Option<String>,

    /// Records per second; 0 = as fast as possible
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,

    /// Stop after this many records
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,

    /// Stop after this long (e.g. 60s, 10m); without --count or --duration, run until Ctrl-C
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,

    /// Partitions for the topic when it has to be created
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,

    /// Replication factor for the topic when it has to be created
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,

    /// Random seed [default: random, printed in the summary]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Event time of the first record (RFC 3339) [default: now]
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,

    /// Event-time pace in records per second of event time [default: --rate, or 1000]
    #[arg(long, value_name = "N")]
    pub events_per_second: Option<f64>,

    /// Users (tweets) or testers (speed tests) in the population
    #[arg(long, default_value_t = 50_000)]
    pub users: usize,

    /// Fraction of records re-sent exactly (same id, same bytes)
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub duplicates: f64,

    /// Fraction of records malformed for the bronze schema
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub malformed: f64,

    /// Fraction of records whose event time lies --late-by in the past
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub late: f64,

    /// How far late records lag
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub late_by: std::time::Duration,

    /// Fraction of well-formed records with values that break a quality rule
    /// (score out of range, negative count, impossible time, missing measurement)
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub invalid: f64,

    /// Message key: `user` keeps each user's records in order on one partition
    /// (with --from: the dataset's key); `none` spreads records evenly over the
    /// partitions
    #[arg(long, value_enum, default_value = "user")]
    pub key: KeyArg,

    /// Write newline-delimited JSON to this file (`-` = stdout) instead of Kafka
    #[arg(long, value_name = "FILE|-")]
    pub out: Option<String>,

    /// Any librdkafka property, repeatable: -X compression.type=zstd
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = lake_kafka::parse_property)]
    pub property: Vec<(String, String)>,

    /// Give up when no broker answers within this long
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Serve the Iceberg REST catalog (PostgreSQL or an embedded file for state)
    #[command(after_help = "\
Examples:
  # Local, embedded database, files under ./lake-data:
  lake catalog serve --insecure-http --admin-key \"$(lake catalog generate-key)\"

  # Deployment: PostgreSQL for state, S3 for files (see catalog/lake.toml):
  lake --config catalog/lake.toml catalog serve

Roles: admin (everything, incl. drop/purge), writer (create, commit), reader (load, list).")]
    Serve(Box<ServeArgs>),
    /// Exit 0 when the configured catalog answers and accepts the token
    Check,
    /// Print a new random API key (rb_…) to give a role
    GenerateKey,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (server.listen) [default: 127.0.0.1:8181]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// postgres://user:pass@host:port/db, or a directory for the embedded database
    /// (server.database) [default: ./lake-data/catalog]
    #[arg(long, value_name = "URL|DIR")]
    pub database: Option<String>,

    /// s3://bucket/prefix or a directory (server.warehouse) [default: ./lake-data/warehouse]
    #[arg(long, value_name = "LOCATION")]
    pub warehouse: Option<String>,

    /// Serve plain HTTP (server.insecure_http); only on a trusted network
    #[arg(long)]
    pub insecure_http: bool,

    /// TLS certificate, PEM (server.tls_cert)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key, PEM (server.tls_key)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Accept this key with the admin role
    #[arg(
        long,
        env = "LAKE_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,

    /// Accept this key with the writer role
    #[arg(
        long,
        env = "LAKE_WRITER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub writer_key: Option<String>,

    /// Accept this key with the reader role
    #[arg(
        long,
        env = "LAKE_READER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub reader_key: Option<String>,

    /// Accept every request without credentials (server.no_auth); local experiments only
    #[arg(long)]
    pub no_auth: bool,
}

impl ServeArgs {
    /// The keys given as flags, by role.
    pub fn role_keys(&self) -> Vec<(Role, &str)> {
        [
            (Role::Admin, &self.admin_key),
            (Role::Writer, &self.writer_key),
            (Role::Reader, &self.reader_key),
        ]
        .into_iter()
        .filter_map(|(role, key)| key.as_deref().map(|k| (role, k)))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted
    Show,
}

impl Cli {
    /// The configuration keys this invocation's flags set.
    pub fn overrides(&self) -> lake_core::Result<Overrides> {
        let g = &self.global;
        let mut o = Overrides::new();
        o.set("catalog.uri", g.catalog_uri.as_ref())?
            .set("catalog.token", g.token.as_ref())?
            .set("pipeline.dir", g.pipeline.as_ref())?
            .set("telemetry.log_format", g.log_format.map(LogFormat::from))?
            .set("telemetry.metrics_addr", g.metrics_addr)?
            .set("telemetry.health_addr", g.health_addr)?
            .set("telemetry.push_gateway", g.push_gateway.as_ref())?;
        if let Command::Generate(generate) = &self.command {
            o.set("kafka.brokers", generate.brokers.as_ref())?;
        }
        if let Command::Ingest(ingest) = &self.command {
            o.set("kafka.brokers", ingest.brokers.as_ref())?;
        }
        if let Command::Run(run) = &self.command {
            o.set("kafka.brokers", run.ingest.brokers.as_ref())?;
        }
        if let Command::Catalog(CatalogCommand::Serve(serve)) = &self.command {
            o.set("server.listen", serve.listen)?
                .set("server.database", serve.database.as_ref())?
                .set("server.warehouse", serve.warehouse.as_ref())?
                .flag("server.insecure_http", serve.insecure_http)?
                .set("server.tls_cert", serve.tls_cert.as_ref())?
                .set("server.tls_key", serve.tls_key.as_ref())?
                .flag("server.no_auth", serve.no_auth)?;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
