//! `lake ingest` against its peers on the real stack, side by side in one run.
//!
//! tests/run --bench peers        (1 M tweets; LAKE_BENCH_TWEETS to change)
//!
//! Needs the services `tests/run` starts (a Kafka 4 broker, PostgreSQL, s3s-fs; their
//! endpoints in LAKE_TEST_*) and the Kafka Connect worker it assembles from Maven Central
//! for this bench (LAKE_TEST_CONNECT_LIBS). A topic of 16 partitions on the broker is filled
//! with generated tweets; a catalog process on PostgreSQL with an S3 warehouse on s3s-fs
//! serves every contestant, each into its own table:
//! - the release `lake ingest tweets --until-caught-up` (classic group protocol, the default,
//!   10 s commit interval);
//! - the same with the tweets declared `[bronze] raw = false` (a pipeline written for the
//!   bench): bronze without `_raw` holds what the Python peer's table holds, plus lake's
//!   Kafka coordinates and times;
//! - the Python peer (benches/ingest_python.py: confluent-kafka, pyarrow, pyiceberg, an
//!   append per 100 k records);
//! - Apache Iceberg's Kafka Connect sink in a standalone worker (one task, the same 10 s
//!   commit interval, JSON values without schemas, the table auto-created), timed from its
//!   start until every record is in its table, then stopped.
//!
//! lake's contestants and the Python peer take turns LAKE_BENCH_RUNS times (3), each run
//! starting one contestant later than the run before (as many runs as contestants put each
//! in every place once) and followed by the in-process ceiling (the same tweets checked,
//! decoded and written to a local table by ingest's code on one thread, with no Kafka and no
//! catalog); their medians are reported with lake's share of the ceiling. The Connect sink,
//! which takes minutes, runs once (LAKE_BENCH_CONNECT=0 skips it). Each runs under
//! `/usr/bin/time` for CPU seconds (the kernel's part of them too), minor page faults and
//! peak RSS; the bench prints wall time, CPU, memory and files written, each lake
//! contestant's throughput relative to each peer, and its CPU-seconds relative to the Python
//! peer's turn by turn (how many turns are within ingest's target of 0.5×).
//! LAKE_BENCH_LOG sets lake's RUST_LOG and prints its log. LAKE_BENCH_BASELINE names a lake
//! config file (`--config`) for a second lake contestant in every turn, e.g. a librdkafka
//! property as it was before a change, so that what the change buys is measured side by side;
//! LAKE_BENCH_BASELINE_ENV (`KEY=VALUE …`, space-separated) sets variables for that contestant
//! alone, e.g. `MALLOC_CONF` to run the allocator as it was; LAKE_BENCH_BASELINE_BIN names
//! the `lake` binary it runs, e.g. one built before a change. Any of them adds the contestant.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iceberg::TableIdent;
use lake_core::config::{KafkaConfig, Role};
use lake_testkit::{CatalogProcess, CatalogSpec, Kafka, Services};

mod common;

const PARTITIONS: i32 = 16;
/// Every contestant's commit interval.
const COMMIT_SECONDS: u64 = 10;
/// Ingest's CPU target: at most this share of the Python peer's CPU-seconds.
const CPU_TARGET: f64 = 0.5;

/// Who takes a turn in every run.
enum Contestant<'a> {
    /// A `lake ingest` into `bronze.<table>_<run>`, with `global` options
    /// before the subcommand, `env` set for it alone and `bin` instead of
    /// the release binary.
    Lake {
        name: &'static str,
        table: &'static str,
        global: Vec<&'a std::ffi::OsStr>,
        env: &'a [(String, String)],
        bin: Option<&'a PathBuf>,
    },
    /// benches/ingest_python.py.
    Python,
}

struct Result {
    name: &'static str,
    /// One of lake's own contestants (compared with each peer).
    lake: bool,
    seconds: f64,
    cpu: f64,
    /// Of `cpu`, the seconds spent in the kernel.
    system: f64,
    /// Minor page faults.
    faults: f64,
    peak_mb: f64,
    files: usize,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this bench through `tests/run --bench peers`")
    })
}

/// Rows and data files in `table`, 0 while it does not exist.
fn table_state(
    runtime: &tokio::runtime::Runtime,
    catalog: &CatalogProcess,
    table: &str,
) -> (u64, usize) {
    runtime.block_on(async {
        let lake = catalog.lake_catalog(Role::Reader).await.expect("catalog");
        let ident = TableIdent::from_strs(table.split('.')).expect("ident");
        let Ok(table) = lake.load(&ident).await else {
            return (0, 0);
        };
        let files = lake_table::files::live_files(&table, None)
            .await
            .expect("live files");
        (
            files.iter().map(|f| f.data_file.record_count()).sum(),
            files.len(),
        )
    })
}

/// A contestant that ran to its end under `/usr/bin/time`, with every one
/// of `tweets` in its table (`state`: rows and files).
fn finished(
    name: &'static str,
    seconds: f64,
    out: &std::process::Output,
    state: (u64, usize),
    tweets: u64,
) -> Result {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}");
    assert_eq!(state.0, tweets, "{name}: rows in its table");
    let (cpu, peak_mb) = common::time_report(&stderr);
    let (system, faults) = common::kernel_report(&stderr);
    Result {
        name,
        lake: false,
        seconds,
        cpu,
        system,
        faults,
        peak_mb,
        files: state.1,
    }
}

fn main() {
    let tweets: u64 = common::env_or("LAKE_BENCH_TWEETS", 1_000_000);
    let connect_libs = PathBuf::from(required("LAKE_TEST_CONNECT_LIBS"));
    let kafka_libs = PathBuf::from(required("LAKE_TEST_KAFKA_LIBS"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let services = Services::from_env();
    let kafka = Kafka::from_env();
    let catalog = runtime
        .block_on(async {
            let mut spec = CatalogSpec::postgres_s3(&services).await?;
            // A short prefix: s3s-fs names a multipart upload's metadata file
            // after the object's whole key in base64, and the Linux limit of
            // 255 bytes per file name refuses keys much over 140 characters.
            spec.warehouse = Some(format!(
                "s3://{}/{}",
                services.s3_bucket,
                &Kafka::unique("p")[..10]
            ));
            CatalogProcess::start(spec).await
        })
        .expect("catalog process");
    let dir = tempfile::tempdir().expect("tempdir");

    // The topic, filled.
    let topic = Kafka::unique("peers");
    runtime
        .block_on(kafka.create_topic(&topic, PARTITIONS))
        .expect("topic");
    let started = Instant::now();
    let settings = KafkaConfig {
        brokers: kafka.brokers().to_string(),
        ..KafkaConfig::default()
    };
    let mb = common::produce_tweets(
        &mut common::tweets_generator(tweets),
        lake_kafka::client_config(&settings, &[]),
        &topic,
        tweets,
    ) as f64
        / 1e6;
    eprintln!(
        "filled {topic}: {tweets} tweets, {mb:.0} MB in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // lake and the Python peer take turns, each run into fresh tables, so
    // both see the same moments of the machine.
    let s3 = &catalog.spec().storage.s3;
    let endpoint = s3.endpoint.clone().unwrap_or_default();
    let access_key = s3.access_key_id.clone().unwrap_or_default();
    let secret_key = s3
        .secret_access_key
        .as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default();
    let runs: usize = common::env_or("LAKE_BENCH_RUNS", 3);
    let payloads = common::TweetPayloads::generate(tweets);
    let mut rounds: Vec<Vec<Result>> = Vec::new();
    let mut ceiling = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut lake_busy, mut python_busy) = (Vec::new(), Vec::new());
    let baseline = std::env::var_os("LAKE_BENCH_BASELINE").map(PathBuf::from);
    let baseline_env: Vec<(String, String)> = std::env::var("LAKE_BENCH_BASELINE_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("LAKE_BENCH_BASELINE_ENV: `{pair}` is not KEY=VALUE"));
            (key.to_string(), value.to_string())
        })
        .collect();
    let baseline_bin = std::env::var_os("LAKE_BENCH_BASELINE_BIN").map(PathBuf::from);
    // The built-in tweets declared without `_raw`: bronze holds what the
    // Python peer's table holds (the parsed payload), plus lake's columns.
    let rawless = dir.path().join("rawless");
    lake_spec::write_examples(&rawless, &["tweets".to_string()], false).expect("pipeline");
    let declaration = rawless.join("datasets/tweets/dataset.toml");
    let declared = std::fs::read_to_string(&declaration).expect("dataset.toml");
    assert!(declared.contains("\nraw = true\n"), "{declared}");
    std::fs::write(
        &declaration,
        declared.replacen("\nraw = true\n", "\nraw = false\n", 1),
    )
    .expect("dataset.toml");
    let baseline_config: Vec<&std::ffi::OsStr> = match &baseline {
        Some(config) => vec!["--config".as_ref(), config.as_os_str()],
        None => Vec::new(),
    };
    let mut contestants = vec![
        Contestant::Lake {
            name: "lake ingest (classic)",
            table: "peers_lake",
            global: Vec::new(),
            env: &[],
            bin: None,
        },
        Contestant::Lake {
            name: "lake ingest ([bronze] raw = false)",
            table: "peers_rawless",
            global: vec!["--pipeline".as_ref(), rawless.as_os_str()],
            env: &[],
            bin: None,
        },
    ];
    if baseline.is_some() || !baseline_env.is_empty() || baseline_bin.is_some() {
        contestants.push(Contestant::Lake {
            name: "lake ingest (LAKE_BENCH_BASELINE)",
            table: "peers_baseline",
            global: baseline_config,
            env: &baseline_env,
            bin: baseline_bin.as_ref(),
        });
    }
    contestants.push(Contestant::Python);
    for run in 0..runs {
        // One contestant's turn: `command` run to its end under
        // `/usr/bin/time`, every tweet checked to be in `table`.
        let turn = |name: &'static str, table: &str, command: &Command| {
            let machine = common::MachineCpu::now();
            let started = Instant::now();
            let out = common::timed(command)
                .output()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let seconds = started.elapsed().as_secs_f64();
            let state = table_state(&runtime, &catalog, table);
            let result = finished(name, seconds, &out, state, tweets);
            (result, machine.cores_busy(), out)
        };
        let lake_turn = |name: &'static str,
                         table: String,
                         global: &[&std::ffi::OsStr],
                         env: &[(String, String)],
                         bin: Option<&PathBuf>| {
            let mut command = Command::new(bin.cloned().unwrap_or_else(lake_testkit::lake_bin));
            command
                .args(global)
                .args([
                    "ingest",
                    "tweets",
                    "--until-caught-up",
                    "--brokers",
                    kafka.brokers(),
                ])
                .args(["--topic", &format!("tweets={topic}")])
                .args([
                    "--table",
                    &format!("tweets={table}"),
                    "--group-id",
                    &Kafka::unique("lake"),
                ])
                .args(["--commit-interval", &format!("{COMMIT_SECONDS}s")]);
            command
                .envs(catalog.lake_env(Role::Writer))
                .env(
                    "RUST_LOG",
                    std::env::var("LAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(dir.path());
            let (mut result, busy, out) = turn(name, &table, &command);
            result.lake = true;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if std::env::var_os("LAKE_BENCH_LOG").is_some() {
                eprintln!("{stderr}");
            }
            let waited = common::first_record_wait(&stderr);
            eprintln!(
                "{name}, run {run}: {:.2}s ({waited:.2}s before the first record), {:.1} CPU-s \
                 ({:.2} in the kernel); the machine {busy:.2} of {cores} cores busy",
                result.seconds, result.cpu, result.system
            );
            (result, busy)
        };
        // Each turn starts one contestant later than the turn before, so
        // that none always runs first (on a cold page cache, say) or right
        // after the same neighbour.
        let mut round: Vec<Option<Result>> = (0..contestants.len()).map(|_| None).collect();
        for k in 0..contestants.len() {
            let i = (k + run) % contestants.len();
            let result = match &contestants[i] {
                Contestant::Lake {
                    name,
                    table,
                    global,
                    env,
                    bin,
                } => {
                    let (result, busy) =
                        lake_turn(name, format!("bronze.{table}_{run}"), global, env, *bin);
                    // The machine's load is reported for the default contestant.
                    if i == 0 {
                        lake_busy.push(busy);
                    }
                    result
                }
                Contestant::Python => {
                    // The Python peer needs the test venv's confluent-kafka
                    // and pyiceberg (tests/run installs them).
                    let table = format!("bronze.peers_python_{run}");
                    let mut command = Command::new(common::python());
                    command
                        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ingest_python.py"))
                        .args([kafka.brokers(), &topic, &Kafka::unique("python"), &table])
                        .arg(tweets.to_string())
                        .env("LAKE_PY_URI", catalog.uri())
                        .env("LAKE_PY_TOKEN", catalog.keys().for_role(Role::Writer))
                        .env("LAKE_PY_S3_ENDPOINT", &endpoint)
                        .env("LAKE_PY_S3_ACCESS_KEY", &access_key)
                        .env("LAKE_PY_S3_SECRET_KEY", &secret_key)
                        .current_dir(dir.path());
                    let (result, busy, _) = turn("Python peer", &table, &command);
                    eprintln!(
                        "Python peer, run {run}: {:.2}s, {:.1} CPU-s ({:.2} in the kernel); the machine {busy:.2} of {cores} cores busy",
                        result.seconds, result.cpu, result.system
                    );
                    python_busy.push(busy);
                    result
                }
            };
            round[i] = Some(result);
        }
        let round: Vec<Result> = round.into_iter().flatten().collect();
        rounds.push(round);

        let seconds = payloads.ceiling(
            &runtime,
            &dir.path().join(format!("ceiling{run}")),
            PARTITIONS,
        );
        eprintln!("ceiling, run {run}: {seconds:.2}s");
        ceiling.push(seconds);
    }
    let ceiling = common::median(ceiling);
    println!(
        "peers/machine: {cores} cores, busy {:.2} during lake's turns and {:.2} during the Python peer's (medians)",
        common::median(lake_busy),
        common::median(python_busy)
    );
    // Per contestant, the median of each figure over the runs.
    let mut results: Vec<Result> = (0..rounds[0].len())
        .map(|i| {
            let of = |f: fn(&Result) -> f64| {
                common::median(rounds.iter().map(|round| f(&round[i])).collect())
            };
            Result {
                name: rounds[0][i].name,
                lake: rounds[0][i].lake,
                seconds: of(|r| r.seconds),
                cpu: of(|r| r.cpu),
                system: of(|r| r.system),
                faults: of(|r| r.faults),
                peak_mb: of(|r| r.peak_mb),
                files: rounds[0][i].files,
            }
        })
        .collect();

    // The CPU target judged turn by turn as well: the peer's CPU-seconds move
    // with the machine's load from turn to turn more than lake's do, and in
    // one turn the two ran minutes apart.
    if let Some(peer) = rounds[0].iter().position(|r| !r.lake) {
        for i in (0..rounds[0].len()).filter(|&i| rounds[0][i].lake) {
            let ratios: Vec<f64> = rounds
                .iter()
                .map(|round| round[i].cpu / round[peer].cpu)
                .collect();
            let within = ratios.iter().filter(|r| **r <= CPU_TARGET).count();
            let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "peers/{}-vs-{}, CPU-seconds turn by turn: {}× ({within} of {} turns at most {CPU_TARGET}×)",
                rounds[0][i].name,
                rounds[0][peer].name,
                listed.join(", "),
                ratios.len()
            );
        }
    }

    if std::env::var("LAKE_BENCH_CONNECT").as_deref() == Ok("0") {
        report(&results, tweets, mb, ceiling);
        return;
    }

    // The Kafka Connect sink.
    let control = Kafka::unique("control-iceberg");
    runtime
        .block_on(kafka.create_topic(&control, 1))
        .expect("control topic");
    let worker = dir.path().join("worker.properties");
    std::fs::write(
        &worker,
        format!(
            "bootstrap.servers={brokers}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter.schemas.enable=false\n\
             offset.storage.file.filename={offsets}\n\
             plugin.path=\n",
            brokers = kafka.brokers(),
            offsets = dir.path().join("connect.offsets").display(),
        ),
    )
    .expect("worker.properties");
    let sink = dir.path().join("sink.properties");
    std::fs::write(
        &sink,
        format!(
            "name=iceberg-sink\n\
             connector.class=org.apache.iceberg.connect.IcebergSinkConnector\n\
             tasks.max=1\n\
             topics={topic}\n\
             consumer.override.auto.offset.reset=earliest\n\
             iceberg.tables=bronze.peers_connect\n\
             iceberg.tables.auto-create-enabled=true\n\
             iceberg.control.topic={control}\n\
             iceberg.control.commit.interval-ms={interval}\n\
             iceberg.catalog.type=rest\n\
             iceberg.catalog.uri={uri}\n\
             iceberg.catalog.token={token}\n\
             iceberg.catalog.rest.auth.type=oauth2\n\
             iceberg.catalog.io-impl=org.apache.iceberg.aws.s3.S3FileIO\n\
             iceberg.catalog.s3.endpoint={endpoint}\n\
             iceberg.catalog.s3.path-style-access=true\n\
             iceberg.catalog.s3.access-key-id={key}\n\
             iceberg.catalog.s3.secret-access-key={secret}\n\
             iceberg.catalog.client.region=us-east-1\n",
            interval = COMMIT_SECONDS * 1000,
            uri = catalog.uri(),
            token = catalog.keys().for_role(Role::Writer),
            key = access_key,
            secret = secret_key,
        ),
    )
    .expect("sink.properties");
    let class_path = format!(
        "{}/*:{}/log4j-api-2.24.3.jar:{}/log4j-core-2.24.3.jar:{}/log4j-slf4j-impl-2.24.3.jar",
        connect_libs.display(),
        kafka_libs.display(),
        kafka_libs.display(),
        kafka_libs.display()
    );
    // Kept after the bench, for what the worker did.
    let log_path = std::env::temp_dir().join("lake-bench-peers-connect.log");
    let log = std::fs::File::create(&log_path).expect("connect.log");
    let started = Instant::now();
    let mut worker_process = common::timed(&Command::new(lake_testkit::java()))
        .args(["-Xmx2g", "-cp", &class_path])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            lake_testkit::repo_root()
                .join("tests/services/kafka-log4j2.properties")
                .display()
        ))
        .arg("org.apache.kafka.connect.cli.ConnectStandalone")
        .arg(&worker)
        .arg(&sink)
        .stdout(log)
        .stderr(Stdio::piped())
        .spawn()
        .expect("java");
    let deadline = Instant::now() + Duration::from_secs(900);
    let (rows, files) = loop {
        let (rows, files) = table_state(&runtime, &catalog, "bronze.peers_connect");
        if rows >= tweets {
            break (rows, files);
        }
        if let Ok(Some(status)) = worker_process.try_wait() {
            panic!(
                "the Connect worker exited ({status}) with {rows} of {tweets} rows in its table; see {}",
                log_path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the Connect sink has {rows} of {tweets} rows after 15 minutes; see {}",
            log_path.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(rows, tweets, "the Connect sink's rows");
    // GNU time waits for its child: stop the worker (time's only child).
    let stopped = Command::new("pkill")
        .args(["-TERM", "-P", &worker_process.id().to_string()])
        .status()
        .expect("pkill");
    assert!(stopped.success(), "stopping the Connect worker");
    let out = worker_process.wait_with_output().expect("worker exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (cpu, peak_mb) = common::time_report(&stderr);
    let (system, faults) = common::kernel_report(&stderr);
    results.push(Result {
        name: "Kafka Connect Iceberg sink",
        lake: false,
        seconds,
        cpu,
        system,
        faults,
        peak_mb,
        files,
    });

    report(&results, tweets, mb, ceiling);
}

/// Prints each contestant's figures, lake's ratio to each peer and its
/// share of the in-process `ceiling` (seconds).
fn report(results: &[Result], tweets: u64, mb: f64, ceiling: f64) {
    for r in results {
        println!(
            "peers/{}: {tweets} tweets ({mb:.0} MB) from the real broker: {:.2}s = {:.0} k tweets/s; {:.1} CPU-s ({:.2} in the kernel, {:.0} k page faults); peak RSS {:.0} MB; {} files",
            r.name,
            r.seconds,
            tweets as f64 / 1e3 / r.seconds,
            r.cpu,
            r.system,
            r.faults / 1e3,
            r.peak_mb,
            r.files
        );
    }
    let lake = &results[0];
    println!(
        "peers/ceiling: the same tweets decoded and written in-process: {ceiling:.2}s = {:.0} k tweets/s; {} at {:.0} % of it",
        tweets as f64 / 1e3 / ceiling,
        lake.name,
        100.0 * ceiling / lake.seconds
    );
    let ratio = |ours: &Result, peer: &Result| {
        format!(
            "{:.2}× the throughput at {:.2}× the CPU-seconds and {:.2}× the memory",
            peer.seconds / ours.seconds,
            ours.cpu / peer.cpu,
            ours.peak_mb / peer.peak_mb
        )
    };
    for peer in &results[1..] {
        println!("peers/lake-vs-{}: {}", peer.name, ratio(lake, peer));
    }
    // lake's other contestants against the peers that are not lake.
    for ours in results[1..].iter().filter(|r| r.lake) {
        for peer in results.iter().filter(|r| !r.lake) {
            println!(
                "peers/{}-vs-{}: {}",
                ours.name,
                peer.name,
                ratio(ours, peer)
            );
        }
    }
}
