//! Superset from PyPI (the venv `tests/run` installs), started by the shipped
//! `deploy/superset/bootstrap.sh` with its database on the test Trino, and
//! asked through its REST API; dashboards rendered in Debian's Chromium.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{free_port, repo_root, required_env};

/// How long the bootstrap (migrations, roles, import) and gunicorn may take
/// to answer `/health`: about 20 s here, with room for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// The admin's password in the test's Superset; nothing outside loopback
/// reaches it.
const PASSWORD: &str = "lake-test-admin";

pub struct Superset {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    http: reqwest::Client,
    token: String,
}

impl Superset {
    /// Runs `deploy/superset/bootstrap.sh` as compose does, but with the
    /// bundle's database on the Trino at `trino_url` (`http://host:port`),
    /// a SQLite metadata database in a temporary folder and a free port;
    /// returns once Superset answers and the admin has signed in.
    pub async fn start(trino_url: &str) -> Result<Self> {
        let venv = PathBuf::from(required_env("LAKE_TEST_SUPERSET"));
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = dir.path().join("superset_config.py");
        // CSRF protection guards browser forms against other sites; this
        // Superset has one client, on loopback, signing in with a password.
        std::fs::write(
            &config,
            format!(
                "SECRET_KEY = {secret:?}\n\
                 SQLALCHEMY_DATABASE_URI = {db:?}\n\
                 WTF_CSRF_ENABLED = False\n",
                secret = format!("lake-test-{}", uuid::Uuid::new_v4().simple()),
                db = format!("sqlite:///{}", dir.path().join("superset.db").display()),
            ),
        )?;
        let log = dir.path().join("superset.log");
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("bash")
            .arg(repo_root().join("deploy/superset/bootstrap.sh"))
            .current_dir(dir.path())
            .env("PATH", path)
            .env("VIRTUAL_ENV", &venv)
            .env("SUPERSET_CONFIG_PATH", &config)
            .env("SUPERSET_HOME", dir.path())
            .env("SUPERSET_ADMIN_PASSWORD", PASSWORD)
            .env(
                "LAKE_SUPERSET_TRINO",
                format!("trino://lake@{}", trino_url.trim_start_matches("http://")),
            )
            .env("SUPERSET_BIND", format!("127.0.0.1:{port}"))
            .env("SUPERSET_WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.path().join("superset.err"))?)
            .spawn()
            .context("start deploy/superset/bootstrap.sh")?;
        let mut superset = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            token: String::new(),
        };
        superset.wait_healthy().await?;
        superset.token = superset.sign_in().await?;
        Ok(superset)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the bootstrap and the server wrote (both streams).
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("superset.log"), read("superset.err"))
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "Superset's bootstrap exited ({status}):\n{}",
                    tail(&self.log())
                );
            }
            let health = self.http.get(format!("{}/health", self.url)).send().await;
            if matches!(health, Ok(ref r) if r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Superset did not answer /health within {START_TIMEOUT:?}:\n{}",
                    tail(&self.log())
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn sign_in(&self) -> Result<String> {
        let answer: Value = self
            .http
            .post(format!("{}/api/v1/security/login", self.url))
            .json(&json!({
                "username": "admin",
                "password": PASSWORD,
                "provider": "db",
                "refresh": false,
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(answer["access_token"]
            .as_str()
            .context("no access_token from /api/v1/security/login")?
            .to_string())
    }

    /// `GET /api/v1/<path>` as the admin.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        answer(response, path).await
    }

    /// `POST /api/v1/<path>` with a JSON body, as the admin.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        answer(response, path).await
    }

    /// Renders the dashboards `slugs` in headless Chromium
    /// (tests/python/superset_render.py), screenshots into `out`; returns the
    /// script's JSON (per dashboard: charts, errors, screenshot; per chart:
    /// the query context the page posted).
    pub fn render(&self, slugs: &[&str], out: &Path) -> Result<Value> {
        let venv = PathBuf::from(required_env("LAKE_TEST_SUPERSET"));
        let script = repo_root().join("tests/python/superset_render.py");
        std::fs::create_dir_all(out)?;
        let output = Command::new(venv.join("bin/python"))
            .arg(&script)
            .args(["--url", &self.url, "--password", PASSWORD])
            .args(["--chromium", &required_env("LAKE_TEST_CHROMIUM")])
            .args(["--chromedriver", &required_env("LAKE_TEST_CHROMEDRIVER")])
            .arg("--out")
            .arg(out)
            .args(slugs)
            // Selenium must use the given driver, never fetch one.
            .env("SE_OFFLINE", "true")
            .env("SE_AVOID_STATS", "true")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}):\n{}\nSuperset's log:\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr),
                tail(&self.log())
            );
        }
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "the render script's output is not JSON:\n{}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

impl Drop for Superset {
    /// gunicorn's master stops its workers on SIGTERM; SIGKILL only if it
    /// does not within ten seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn answer(response: reqwest::Response, path: &str) -> Result<Value> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("Superset answered {status} to {path}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))
}

/// The last lines of a log, where a failure says why.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
