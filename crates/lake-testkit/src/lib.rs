//! Test-only helpers: attach to the services `tests/run` started (PostgreSQL,
//! s3s-fs) and start real `lake catalog serve` processes against them.
//!
//! A test that needs a service and finds none panics with the command to run;
//! nothing here skips.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use iceberg::CatalogBuilder;
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use lake_core::Config;
use lake_core::config::{Role, S3Config, StorageConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The command that starts the services and runs the tests.
pub const RUNNER: &str = "tests/run";

/// How long a catalog process may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set. This test needs the real services (PostgreSQL, s3s-fs, pyiceberg); \
             run the suite with `{RUNNER}`, which installs and starts them (it \
             sets LAKE_TEST_POSTGRES_URL, LAKE_TEST_S3_* and LAKE_TEST_PYTHON)."
        ),
    }
}

/// Endpoints of the services the test runner started.
#[derive(Clone, Debug)]
pub struct Services {
    /// An admin connection URL (database `postgres`).
    pub postgres_url: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_bucket: String,
}

impl Services {
    /// Reads the endpoints from `LAKE_TEST_*`; panics naming the runner if absent.
    pub fn from_env() -> Self {
        Self {
            postgres_url: required_env("LAKE_TEST_POSTGRES_URL"),
            s3_endpoint: required_env("LAKE_TEST_S3_ENDPOINT"),
            s3_access_key: required_env("LAKE_TEST_S3_ACCESS_KEY"),
            s3_secret_key: required_env("LAKE_TEST_S3_SECRET_KEY"),
            s3_bucket: required_env("LAKE_TEST_S3_BUCKET"),
        }
    }

    /// A new, empty PostgreSQL database for one test; returns its URL.
    pub async fn fresh_database(&self) -> Result<String> {
        use sqlx::Connection;
        let name = format!("lake_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&self.postgres_url)
            .await
            .with_context(|| format!("connect to {}", self.postgres_url))?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let (base, _) = self
            .postgres_url
            .rsplit_once('/')
            .ok_or_else(|| anyhow!("LAKE_TEST_POSTGRES_URL has no database part"))?;
        Ok(format!("{base}/{name}"))
    }

    /// A warehouse location no other test uses: `s3://<bucket>/<random>`.
    pub fn fresh_warehouse(&self) -> String {
        format!("s3://{}/{}", self.s3_bucket, uuid::Uuid::new_v4().simple())
    }

    /// Storage settings that reach s3s-fs.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            s3: S3Config {
                endpoint: Some(self.s3_endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some(self.s3_access_key.clone()),
                secret_access_key: Some(lake_core::Secret::new(&self.s3_secret_key)),
                path_style_access: true,
            },
        }
    }
}

/// What pyiceberg saw in one table (see tests/python/read_table.py).
#[derive(Debug, serde::Deserialize)]
pub struct PyTable {
    pub current: Option<i64>,
    pub snapshots: std::collections::BTreeMap<String, PySnapshot>,
}

#[derive(Debug, serde::Deserialize)]
pub struct PySnapshot {
    pub operation: Option<String>,
    pub summary: std::collections::BTreeMap<String, String>,
    pub rows: u64,
    pub values: Vec<serde_json::Value>,
}

impl PyTable {
    pub fn snapshot(&self, id: i64) -> &PySnapshot {
        self.snapshots.get(&id.to_string()).unwrap_or_else(|| {
            panic!(
                "pyiceberg saw no snapshot {id}: {:?}",
                self.snapshots.keys()
            )
        })
    }
}

/// The Python with pyiceberg that `tests/run` installed.
pub fn python() -> PathBuf {
    PathBuf::from(required_env("LAKE_TEST_PYTHON"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The repository root (for tests that read deployment files): the nearest
/// directory above the running test's package holding Cargo.lock. Found at
/// run time, not compile time: clones at other paths share one cached build,
/// which would otherwise point every clone at the one that compiled it.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("CARGO_MANIFEST_DIR or a working directory");
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", start.display()))
        .to_path_buf()
}

/// The `lake` binary of this build.
///
/// Tests run from `<target>/<profile>/deps/`; the binary sits one level up.
/// `LAKE_BIN` overrides, for running the tests against another build.
pub fn lake_bin() -> PathBuf {
    if let Ok(path) = std::env::var("LAKE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps");
    let bin = profile_dir.join("lake");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build -p lake-cli`, which `{RUNNER}` does)",
        bin.display()
    );
    bin
}

/// One API key per role.
#[derive(Clone, Debug)]
pub struct Keys {
    pub admin: String,
    pub writer: String,
    pub reader: String,
}

impl Keys {
    pub fn generate() -> Self {
        Self {
            admin: lake_catalog::generate_key(),
            writer: lake_catalog::generate_key(),
            reader: lake_catalog::generate_key(),
        }
    }

    pub fn for_role(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Writer => &self.writer,
            Role::Reader => &self.reader,
        }
    }
}

/// How to start a catalog process.
#[derive(Clone, Debug)]
pub struct CatalogSpec {
    /// `postgres://…` or a directory; passed as `--database` when set.
    pub database: Option<String>,
    /// `s3://…` or a directory; passed as `--warehouse` when set.
    pub warehouse: Option<String>,
    pub storage: StorageConfig,
    pub keys: Keys,
    /// Passed as `--config` when set.
    pub config_file: Option<PathBuf>,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// Extra flags after `lake catalog serve`.
    pub args: Vec<String>,
    /// Serve plain HTTP (`--insecure-http`); off when the test brings TLS flags.
    pub plain_http: bool,
}

impl CatalogSpec {
    /// PostgreSQL (a fresh database) and an S3 warehouse on s3s-fs.
    pub async fn postgres_s3(services: &Services) -> Result<Self> {
        Ok(Self {
            database: Some(services.fresh_database().await?),
            warehouse: Some(services.fresh_warehouse()),
            storage: services.storage(),
            keys: Keys::generate(),
            config_file: None,
            env: Vec::new(),
            args: Vec::new(),
            plain_http: true,
        })
    }

    /// The embedded database and a local warehouse, both under `dir`.
    pub fn embedded(dir: &Path) -> Self {
        Self {
            database: Some(dir.join("catalog").display().to_string()),
            warehouse: Some(format!("file://{}", dir.join("warehouse").display())),
            storage: StorageConfig::default(),
            keys: Keys::generate(),
            config_file: None,
            env: Vec::new(),
            args: Vec::new(),
            plain_http: true,
        }
    }
}

/// A running `lake catalog serve`, killed when dropped.
pub struct CatalogProcess {
    spec: CatalogSpec,
    child: Option<Child>,
    uri: String,
    workdir: tempfile::TempDir,
}

impl CatalogProcess {
    /// Starts the catalog on a free loopback port and waits until it listens.
    pub async fn start(spec: CatalogSpec) -> Result<Self> {
        let workdir = tempfile::tempdir()?;
        let (child, uri) = spawn(&spec, workdir.path()).await?;
        Ok(Self {
            spec,
            child: Some(child),
            uri,
            workdir,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn keys(&self) -> &Keys {
        &self.spec.keys
    }

    pub fn spec(&self) -> &CatalogSpec {
        &self.spec
    }

    /// Kills the process (SIGKILL, no chance to flush anything) and starts a
    /// new one on the same database and warehouse.
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.kill().await?;
        let (child, uri) = spawn(&self.spec, self.workdir.path()).await?;
        self.child = Some(child);
        self.uri = uri;
        Ok(())
    }

    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Client configuration for `role`, as a `lake` command would load it.
    pub fn client_config(&self, role: Option<Role>) -> Config {
        let mut config = Config::default();
        config.catalog.uri = self.uri.clone();
        config.catalog.token = role.map(|r| lake_core::Secret::new(self.spec.keys.for_role(r)));
        config.storage = self.spec.storage.clone();
        config
    }

    /// An iceberg REST client acting with `role`'s key.
    pub async fn rest_catalog(&self, role: Role) -> Result<RestCatalog> {
        Ok(lake_core::catalog::connect(&self.client_config(Some(role))).await?)
    }

    /// lake's catalog connection (reads and commits) acting with `role`'s key.
    pub async fn lake_catalog(&self, role: Role) -> Result<lake_table::LakeCatalog> {
        Ok(lake_table::LakeCatalog::connect(&self.client_config(Some(role))).await?)
    }

    /// Reads `table` with pyiceberg and returns what every snapshot holds.
    pub fn read_with_pyiceberg(&self, table: &str, column: &str) -> Result<PyTable> {
        let mut command = std::process::Command::new(python());
        command
            .arg(repo_root().join("tests/python/read_table.py"))
            .args([table, column])
            .env("LAKE_PY_URI", &self.uri)
            .env("LAKE_PY_TOKEN", &self.spec.keys.reader);
        let s3 = &self.spec.storage.s3;
        if let (Some(endpoint), Some(key), Some(secret)) =
            (&s3.endpoint, &s3.access_key_id, &s3.secret_access_key)
        {
            command
                .env("LAKE_PY_S3_ENDPOINT", endpoint)
                .env("LAKE_PY_S3_ACCESS_KEY", key)
                .env("LAKE_PY_S3_SECRET_KEY", secret.expose());
        }
        let output = command.output().context("run pyiceberg")?;
        if !output.status.success() {
            bail!(
                "pyiceberg could not read {table}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Environment for a `lake` child process acting with `role`'s key.
    pub fn lake_env(&self, role: Role) -> Vec<(String, String)> {
        let mut env = vec![
            ("LAKE_CATALOG__URI".to_string(), self.uri.clone()),
            (
                "LAKE_CATALOG__TOKEN".to_string(),
                self.spec.keys.for_role(role).to_string(),
            ),
        ];
        env.extend(storage_env(&self.spec.storage));
        env
    }

    /// An iceberg REST client with no credential at all.
    pub async fn anonymous_catalog(&self) -> Result<RestCatalog> {
        let config = self.client_config(None);
        Ok(RestCatalogBuilder::default()
            .with_storage_factory(lake_core::storage::storage_factory())
            .load("anonymous", lake_core::catalog::rest_properties(&config))
            .await?)
    }

    /// The catalog's log so far (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.workdir.path().join("catalog.log")).unwrap_or_default()
    }
}

impl Drop for CatalogProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

async fn spawn(spec: &CatalogSpec, workdir: &Path) -> Result<(Child, String)> {
    let log_path = workdir.join("catalog.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = Command::new(lake_bin());
    command
        .args(["catalog", "serve", "--listen", "127.0.0.1:0"])
        .args(&spec.args)
        .env("LAKE_ADMIN_KEY", &spec.keys.admin)
        .env("LAKE_WRITER_KEY", &spec.keys.writer)
        .env("LAKE_READER_KEY", &spec.keys.reader)
        .env_remove("LAKE_CONFIG")
        .env("RUST_LOG", "info")
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if spec.plain_http {
        command.arg("--insecure-http");
    }
    if let Some(database) = &spec.database {
        command.args(["--database", database]);
    }
    if let Some(warehouse) = &spec.warehouse {
        command.args(["--warehouse", warehouse]);
    }
    if let Some(file) = &spec.config_file {
        command.arg("--config").arg(file);
    }
    for (key, value) in storage_env(&spec.storage)
        .into_iter()
        .chain(spec.env.clone())
    {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("spawn {}", lake_bin().display()))?;
    let stdout = child.stdout.take().context("catalog stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(uri) = line.strip_prefix("lake catalog listening on ") {
                return Ok::<_, anyhow::Error>(Some(uri.trim().to_string()));
            }
        }
        Ok(None)
    };
    let uri = match tokio::time::timeout(START_TIMEOUT, wait).await {
        Ok(Ok(Some(uri))) => uri,
        outcome => {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("catalog did not start ({outcome:?}); its log:\n{log}");
        }
    };
    // Keep draining stdout (the audit trail, if enabled) so the pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, uri))
}

/// `LAKE_STORAGE__S3__…` variables carrying `storage` to a child process.
pub fn storage_env(storage: &StorageConfig) -> Vec<(String, String)> {
    let s3 = &storage.s3;
    let mut env = Vec::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            env.push((format!("LAKE_STORAGE__S3__{key}"), value));
        }
    };
    put("ENDPOINT", s3.endpoint.clone());
    put("REGION", s3.region.clone());
    put("ACCESS_KEY_ID", s3.access_key_id.clone());
    put(
        "SECRET_ACCESS_KEY",
        s3.secret_access_key
            .as_ref()
            .map(|s| s.expose().to_string()),
    );
    put(
        "PATH_STYLE_ACCESS",
        s3.path_style_access.then(|| "true".to_string()),
    );
    env
}

/// librdkafka's mock Kafka cluster: real brokers on loopback ports that
/// other processes (a `lake` child) can reach. Lives as long as this value.
pub struct KafkaMock {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl KafkaMock {
    pub fn start(brokers: i32) -> Result<Self> {
        Ok(Self {
            cluster: rdkafka::mocking::MockCluster::new(brokers)?,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The mock does not answer CreateTopics; topics are made here.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.cluster.create_topic(topic, partitions, 1)?;
        Ok(())
    }
}

/// One consumed message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Reads `topic` from the beginning until `expected` messages arrived and
/// then a quiet second passed (so extra messages would be seen), or fails
/// after `timeout`.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<Consumed>> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("verify-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = std::time::Instant::now() + timeout;
    let mut messages = Vec::with_capacity(expected);
    let mut quiet_since: Option<std::time::Instant> = None;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = None;
                messages.push(Consumed {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            None if messages.len() >= expected => {
                let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(1) {
                    return Ok(messages);
                }
            }
            None => {}
        }
    }
    bail!(
        "consumed {} of {expected} messages from {topic} within {timeout:?}",
        messages.len()
    )
}

fn lake_command<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
    dir: &Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(lake_bin());
    command
        .args(args)
        .current_dir(dir)
        .env_remove("LAKE_CONFIG")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs the `lake` binary to completion with `args`, in an empty directory.
pub fn run_lake(args: &[&str]) -> Result<std::process::Output> {
    run_lake_env(args, Vec::<(String, String)>::new())
}

/// [`run_lake`] with extra environment variables.
pub fn run_lake_env<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    Ok(lake_command(args, env, dir.path()).output()?)
}

/// [`run_lake_env`] that must succeed: a failure is an error carrying the
/// command and its stderr.
pub fn run_lake_ok<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<std::process::Output> {
    let out = run_lake_env(args, env)?;
    if !out.status.success() {
        bail!(
            "lake {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// A `lake` process in the background; killed (SIGKILL) when dropped.
pub struct LakeProcess {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl LakeProcess {
    pub fn spawn<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        args: &[&str],
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("stderr.log");
        let child = lake_command(args, env, dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self {
            child,
            _dir: dir,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no commit, no goodbye.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                bail!("still running after {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until its stderr contains `text`.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.log().contains(text) {
            if !self.running() {
                bail!("exited before logging `{text}`:\n{}", self.log());
            }
            if std::time::Instant::now() >= deadline {
                bail!("no `{text}` within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
