//! `lake catalog serve` as a child process on the test services, and the
//! clients that talk to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iceberg::CatalogBuilder;
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use lake_core::Config;
use lake_core::config::{Role, StorageConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{Services, lake_bin, python, repo_root};

/// How long a catalog process may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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

    /// Starts the catalog again on the port it had, after [`kill`](Self::kill):
    /// what a rolling restart looks like to its clients.
    pub async fn start_again(&mut self) -> Result<()> {
        let listen = self
            .uri
            .rsplit("://")
            .next()
            .unwrap_or_default()
            .to_string();
        let (child, uri) = spawn_on(&self.spec, self.workdir.path(), &listen).await?;
        anyhow::ensure!(uri == self.uri, "restarted on {uri}, not {}", self.uri);
        self.child = Some(child);
        Ok(())
    }

    /// Sends a signal by name (`STOP` freezes it: connections are accepted
    /// by the kernel and never answered).
    pub fn signal(&self, name: &str) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("the catalog is not running")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
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
        env.push(("LAKE_PII_KEY".to_string(), crate::PII_KEY.to_string()));
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
    spawn_on(spec, workdir, "127.0.0.1:0").await
}

async fn spawn_on(spec: &CatalogSpec, workdir: &Path, listen: &str) -> Result<(Child, String)> {
    let log_path = workdir.join("catalog.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = Command::new(lake_bin());
    command
        .args(["catalog", "serve", "--listen", listen])
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
