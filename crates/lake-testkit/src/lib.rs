//! Test-only helpers: attach to the services `tests/run` started
//! (PostgreSQL, s3s-fs, a Kafka broker, Trino), start real `lake catalog
//! serve` and `lake` processes against them, and read what they wrote with
//! clients lake does not use (pyiceberg, Trino, Kafka's Java admin client,
//! Trino's JDBC driver), and Superset with Chromium on top of Trino.
//!
//! A test that needs a service and finds none panics with the command to run;
//! nothing here skips.
#![allow(clippy::unwrap_used)]

mod broker;
mod catalog;
mod kafka;
mod process;
mod superset;
mod trino;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use lake_core::config::{S3Config, StorageConfig};

pub use broker::OwnBroker;
pub use catalog::{CatalogProcess, CatalogSpec, Keys, PySnapshot, PyTable, storage_env};
pub use kafka::{Consumed, DatasetTopics, GroupView, Kafka};
pub use process::{LakeProcess, run_lake, run_lake_env, run_lake_in, run_lake_jsonl, run_lake_ok};
pub use superset::Superset;
pub use trino::{Column, QueryError, Rows, Trino};

/// The key `lake` processes of the tests hash personal data with
/// (`LAKE_PII_KEY`); tests compute the expected hashes with it.
pub const PII_KEY: &str = "lake-test-pii-key-0123456789abcdef";

/// HMAC-SHA256 of `value` under [`PII_KEY`], as silver's `hash` writes it.
pub fn pii_hash(value: &str) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(PII_KEY.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The command that starts the services and runs the tests.
pub const RUNNER: &str = "tests/run";

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set. This test needs the real services (PostgreSQL, s3s-fs, Kafka, \
             Trino, pyiceberg, Java); run the suite with `{RUNNER}`, which installs and starts \
             them and sets the LAKE_TEST_* variables."
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

/// The Java (17+) that runs the single-file programs under tests/java.
pub fn java() -> PathBuf {
    PathBuf::from(required_env("LAKE_TEST_JAVA"))
}

/// Runs `tests/java/<program>.java` with `class_path`, as Java's single-file
/// source launcher does (`java -cp … Program.java args…`); returns its
/// standard output, or an error carrying its standard error.
pub fn run_java(program: &str, class_path: &str, args: &[&str]) -> Result<String> {
    let source = repo_root().join(format!("tests/java/{program}.java"));
    let out = std::process::Command::new(java())
        .arg("-cp")
        .arg(class_path)
        .arg(&source)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("run {} {}", java().display(), source.display()))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
