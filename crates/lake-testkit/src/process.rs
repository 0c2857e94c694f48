//! `lake` commands as child processes, run to completion or in the background.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::lake_bin;

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

/// [`run_lake_env`] with `dir` as the working directory, for commands that
/// look for files there (./lake.toml, ./lake-data).
pub fn run_lake_in<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<std::process::Output> {
    Ok(lake_command(args, env, dir).output()?)
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

/// [`run_lake_ok`] of a command printing JSON lines (`lake sql --format
/// jsonl …`): one value per line of its standard output.
pub fn run_lake_jsonl<T, K, V>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<T>>
where
    T: serde::de::DeserializeOwned,
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let out = run_lake_ok(args, env)?;
    String::from_utf8(out.stdout)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
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
