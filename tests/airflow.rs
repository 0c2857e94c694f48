//! airflow/dags/medallion_pipeline.py under the Airflow that `tests/run`
//! installs: the file imports cleanly into a DagBag with the expected tasks in
//! order, and `airflow dags test` runs the real `lake` binary against the
//! catalog on PostgreSQL + s3s-fs and the Kafka broker of `tests/run`, building gold;
//! a failing step fails the run and commits nothing after it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use lake_core::config::Role;
use lake_testkit::{
    CatalogProcess, CatalogSpec, DatasetTopics, Kafka, Services, lake_bin, python, repo_root,
    run_lake_ok,
};
use serde_json::Value;

fn dags_folder() -> PathBuf {
    repo_root().join("airflow/dags")
}

fn airflow_bin() -> PathBuf {
    python().with_file_name("airflow")
}

/// A private AIRFLOW_HOME with its SQLite metadata database migrated.
struct Airflow {
    home: tempfile::TempDir,
}

impl Airflow {
    fn new() -> Result<Self> {
        let airflow = Airflow {
            home: tempfile::tempdir()?,
        };
        let out = airflow.command(&[])?.args(["db", "migrate"]).output()?;
        ensure!(
            out.status.success(),
            "airflow db migrate failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(airflow)
    }

    /// `airflow` with this home, the repository's DAGs and `env`; lake's own
    /// settings only from `env`, never from the runner's environment.
    fn command(&self, env: &[(String, String)]) -> Result<Command> {
        let bin = airflow_bin();
        ensure!(
            bin.is_file(),
            "{} is missing: tests/run installs apache-airflow from tests/python/requirements.txt",
            bin.display()
        );
        let mut command = Command::new(bin);
        command
            .current_dir(self.home.path())
            .env("AIRFLOW_HOME", self.home.path())
            .env("AIRFLOW__CORE__DAGS_FOLDER", dags_folder())
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "300")
            .env("AIRFLOW_VAR_LAKE_BIN", lake_bin())
            .stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("LAKE_") && key != "LAKE_TEST_PYTHON" {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Ok(command)
    }

    /// `airflow dags test DAG`: whether the run succeeded, and its log.
    fn dags_test(&self, dag: &str, env: &[(String, String)]) -> Result<(bool, String)> {
        let log_path = self.home.path().join(format!("{dag}.log"));
        let log = std::fs::File::create(&log_path)?;
        let status = self
            .command(env)?
            .args(["dags", "test", dag])
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()?;
        Ok((status.success(), std::fs::read_to_string(&log_path)?))
    }
}

/// The last lines of a long log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The tasks a `dags test` log shows as run (a task that never started,
/// because an upstream one failed, prints no "end task" line).
fn tasks_run(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|line| line.split("[DAG TEST] end task task_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A stand-in Pushgateway on loopback: keeps each `PUT /metrics/job/<job>`
/// body by job, the last one winning as on the real one.
struct PushCapture {
    url: String,
    pushed: Arc<Mutex<BTreeMap<String, String>>>,
}

impl PushCapture {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let pushed = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = pushed.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok((path, body)) = read_request(&stream)
                    && let Some(job) = path.strip_prefix("/metrics/job/")
                {
                    sink.lock().unwrap().insert(job.to_string(), body);
                }
                let _ = (&stream).write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Ok(Self { url, pushed })
    }

    /// The sum of a metric's series in the last push of `job`.
    fn total(&self, job: &str, metric: &str) -> Result<f64> {
        let pushed = self.pushed.lock().unwrap();
        let body = pushed
            .get(job)
            .with_context(|| format!("no push for {job}: {:?}", pushed.keys()))?;
        let mut total = 0.0;
        for line in body.lines() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if name == metric {
                let value = line.rsplit(' ').next().unwrap_or_default();
                total += value
                    .parse::<f64>()
                    .with_context(|| format!("in `{line}`"))?;
            }
        }
        Ok(total)
    }
}

fn read_request(stream: &TcpStream) -> Result<(String, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((path, String::from_utf8(body)?))
}

fn names(tasks: &[&str]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.to_string()).collect()
}

fn generate(topics: &DatasetTopics, dataset: &str, count: u64, seed: u64) -> Result<()> {
    let (count, seed) = (count.to_string(), seed.to_string());
    let mut args = vec![
        "generate", dataset, "--rate", "0", "--count", &count, "--seed", &seed,
    ];
    let routes = topics.generate_args(dataset);
    args.extend(routes.iter().map(String::as_str));
    run_lake_ok(&args, Vec::<(String, String)>::new())?;
    Ok(())
}

/// One number from `lake sql` as the reader.
fn scalar(catalog: &CatalogProcess, query: &str) -> Result<u64> {
    let out = run_lake_ok(
        &["sql", "--format", "json", query],
        catalog.lake_env(Role::Reader),
    )?;
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing {}", String::from_utf8_lossy(&out.stdout)))?;
    rows.first()
        .and_then(|row| row.get("n"))
        .and_then(Value::as_u64)
        .with_context(|| format!("no integer `n` in {rows:?} for {query}"))
}

#[test]
fn the_dag_file_imports_cleanly_with_the_steps_in_order() -> Result<()> {
    let airflow = Airflow::new()?;
    let script = r#"
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": str(dag.schedule),
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "tasks": {
            t.task_id: {
                "operator": type(t).__name__,
                "bash_command": t.bash_command,
                "downstream": sorted(t.downstream_task_ids),
                "retries": t.retries,
                "timeout_s": t.execution_timeout.total_seconds(),
            }
            for t in dag.tasks
        },
    }
print("DAGBAG " + json.dumps(out))
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(dags_folder())
        .env("AIRFLOW_HOME", airflow.home.path())
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        // The default 30 s parse limit is within reach of a loaded CI machine.
        .env("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "300")
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "DagBag failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DAGBAG "))
        .context("no DAGBAG line")?;
    let bag: Value = serde_json::from_str(json)?;
    assert_eq!(bag["import_errors"], serde_json::json!({}), "{bag:#}");

    let dags = bag["dags"].as_object().context("dags")?;
    // serde_json's map order depends on features other crates turn on.
    let ids: BTreeSet<&String> = dags.keys().collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["lake_maintenance", "lake_medallion"],
        "{bag:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let medallion = &dags["lake_medallion"];
    assert_eq!(medallion["schedule"], "*/15 * * * *");
    assert_eq!(medallion["max_active_runs"], 1);
    assert_eq!(medallion["catchup"], false);
    let lake = "{{ var.value.get('lake_bin', 'lake') }}";
    let tasks = medallion["tasks"].as_object().context("tasks")?;
    assert_eq!(
        tasks["ingest"]["bash_command"],
        format!(
            "{{% if var.value.get('lake_ingest_mode', 'batch') == 'continuous' %}}\
             echo 'lake_ingest_mode=continuous: a running lake ingest keeps bronze current'\
             {{% else %}}{lake} ingest --until-caught-up {{{{ var.value.get('lake_ingest_args', '') }}}}\
             {{% endif %}}"
        )
    );
    let expected = [
        (
            "transform_silver",
            "transform silver {{ var.value.get('lake_transform_args', '') }}",
            vec!["transform_gold"],
        ),
        (
            "transform_gold",
            "transform gold {{ var.value.get('lake_transform_args', '') }}",
            vec!["compact"],
        ),
        (
            "compact",
            "compact --all {{ var.value.get('lake_compact_args', '') }}",
            vec![],
        ),
    ];
    assert_eq!(tasks.len(), expected.len() + 1, "{tasks:#?}");
    assert_eq!(
        tasks["ingest"]["downstream"],
        serde_json::json!(["transform_silver"])
    );
    for (id, command, downstream) in expected {
        let task = &tasks[id];
        assert_eq!(task["operator"], "BashOperator", "{id}");
        assert_eq!(task["bash_command"], format!("{lake} {command}"), "{id}");
        assert_eq!(task["downstream"], serde_json::json!(downstream), "{id}");
        assert_eq!(task["retries"], 2, "{id}");
        assert_eq!(task["timeout_s"], 3600.0, "{id}");
    }
    let maintenance = &dags["lake_maintenance"];
    assert_eq!(maintenance["schedule"], "@daily");
    assert_eq!(
        maintenance["tasks"]["maintain_all"]["bash_command"],
        format!("{lake} maintain all {{{{ var.value.get('lake_maintain_args', '') }}}}")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dags_test_runs_lake_into_gold_and_a_failing_step_fails_the_run() -> Result<()> {
    let services = Services::from_env();
    let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let topics = DatasetTopics::create(3).await?;
    generate(&topics, "tweets", 3_000, 11)?;
    generate(&topics, "speedtest", 1_000, 12)?;
    let airflow = Airflow::new()?;

    // The brokers come from the environment, as in compose.yaml; the DAG's
    // ingest step reads this test's topics, in a group of its own.
    let mut env = catalog.lake_env(Role::Writer);
    env.push(("LAKE_KAFKA__BROKERS".into(), topics.kafka.brokers().into()));
    env.push((
        "AIRFLOW_VAR_LAKE_INGEST_ARGS".into(),
        format!(
            "--group-id {} --topic tweets={} --topic speedtest={}",
            Kafka::unique("airflow-test"),
            topics.tweets,
            topics.speedtest
        ),
    ));
    // As in compose.yaml: each step pushes its metrics when it ends.
    let gateway = PushCapture::start()?;
    env.push(("LAKE_TELEMETRY__PUSH_GATEWAY".into(), gateway.url.clone()));

    let (ok, log) = airflow.dags_test("lake_medallion", &env)?;
    ensure!(ok, "the first run failed:\n{}", tail(&log));
    assert_eq!(
        tasks_run(&log),
        names(&["ingest", "transform_silver", "transform_gold", "compact"]),
        "{}",
        tail(&log)
    );
    let counts = |catalog: &CatalogProcess| -> Result<[u64; 6]> {
        Ok([
            scalar(catalog, "SELECT count(*) AS n FROM bronze.tweets_raw")?,
            scalar(catalog, "SELECT count(*) AS n FROM silver.tweets_clean")?,
            scalar(
                catalog,
                "SELECT CAST(sum(tweet_count) AS BIGINT) AS n FROM gold.tweet_volume_by_region",
            )?,
            scalar(
                catalog,
                "SELECT count(DISTINCT user_id) AS n FROM silver.tweets_clean",
            )?,
            scalar(
                catalog,
                "SELECT CAST(sum(test_count) AS BIGINT) AS n FROM gold.speedtest_agg",
            )?,
            scalar(
                catalog,
                "SELECT count(*) AS n FROM (SELECT user_id FROM gold.active_users_by_day GROUP BY user_id)",
            )?,
        ])
    };
    let first = counts(&catalog)?;
    assert_eq!(first[0], 3_000, "bronze tweets");
    assert_eq!(first[1], 3_000, "silver tweets");
    assert_eq!(first[2], 3_000, "gold tweet volume");
    assert_eq!(first[4], 1_000, "gold speed tests");
    assert_eq!(first[5], first[3], "gold active users = silver's users");
    use lake_core::metrics as m;
    assert_eq!(
        gateway.total("lake_ingest", m::INGEST_RECORDS_TOTAL)?,
        4_000.0
    );
    assert_eq!(
        gateway.total("lake_transform_silver", m::TRANSFORM_ROWS_WRITTEN_TOTAL)?,
        4_000.0
    );
    assert_eq!(
        gateway.total("lake_transform_silver", m::TRANSFORM_DUPLICATES_TOTAL)?,
        0.0
    );
    assert!(gateway.total("lake_transform_gold", m::TRANSFORM_ROWS_WRITTEN_TOTAL)? > 0.0);
    assert_eq!(
        gateway.total("lake_compact", m::BUILD_INFO)?,
        1.0,
        "every step pushes, compaction included"
    );

    // A step that fails (the catalog refuses the key) fails the run, and the
    // steps after it never start: nothing new reaches bronze, silver or gold.
    generate(&topics, "tweets", 500, 13)?;
    let mut broken = env.clone();
    broken.retain(|(k, _)| k != "LAKE_CATALOG__TOKEN");
    broken.push(("LAKE_CATALOG__TOKEN".into(), "rb_not_a_key".into()));
    broken.push(("LAKE_DAG_RETRIES".into(), "0".into()));
    let (ok, log) = airflow.dags_test("lake_medallion", &broken)?;
    ensure!(!ok, "the run with a refused key succeeded:\n{}", tail(&log));
    assert!(log.contains("state=failed"), "{}", tail(&log));
    assert_eq!(tasks_run(&log), names(&["ingest"]), "{}", tail(&log));
    assert_eq!(counts(&catalog)?, first);

    // The next good run picks up exactly what the failed one left.
    let (ok, log) = airflow.dags_test("lake_medallion", &env)?;
    ensure!(ok, "the run after the failure failed:\n{}", tail(&log));
    let second = counts(&catalog)?;
    assert_eq!(second[..3], [3_500, 3_500, 3_500]);
    assert_eq!(second[4], 1_000);
    assert_eq!(second[5], second[3]);

    // Where a continuous `lake ingest` runs (compose), the DAG's ingest step
    // stands aside: new records stay in Kafka for that process.
    generate(&topics, "tweets", 200, 14)?;
    let mut continuous = env.clone();
    continuous.push(("AIRFLOW_VAR_LAKE_INGEST_MODE".into(), "continuous".into()));
    let (ok, log) = airflow.dags_test("lake_medallion", &continuous)?;
    ensure!(ok, "the run in continuous mode failed:\n{}", tail(&log));
    assert!(
        log.contains("lake_ingest_mode=continuous: a running lake ingest keeps bronze current"),
        "{}",
        tail(&log)
    );
    assert_eq!(counts(&catalog)?, second);

    let (ok, log) = airflow.dags_test("lake_maintenance", &env)?;
    ensure!(ok, "maintenance failed:\n{}", tail(&log));
    assert_eq!(tasks_run(&log), names(&["maintain_all"]));
    assert_eq!(counts(&catalog)?, second);
    Ok(())
}
