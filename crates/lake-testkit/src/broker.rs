//! A Kafka broker of a test's own, for tests that stop and restart it: the
//! broker `tests/run` starts is shared by every test and must stay up. Same
//! Kafka build and settings (KRaft, one node), its own ports and log
//! directory, which survives a restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Kafka, free_port, java, repo_root, required_env};

pub struct OwnBroker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnBroker {
    /// Formats a log directory and starts the broker; returns once it
    /// reports "Kafka Server started".
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let controller = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             group.min.session.timeout.ms=1000\n",
            data.display()
        );
        std::fs::write(dir.path().join("server.properties"), properties)?;
        let mut broker = Self {
            child: None,
            dir,
            port,
        };
        let format = broker
            .java()
            .args(["kafka.tools.StorageTool", "format", "--cluster-id"])
            .arg("MkU3OEVBNTcwNTJENDM2Qk")
            .arg("--config")
            .arg(broker.properties())
            .output()
            .context("formatting the broker's log directory")?;
        if !format.status.success() {
            bail!(
                "formatting the broker's log directory failed:\n{}",
                String::from_utf8_lossy(&format.stderr)
            );
        }
        broker.start_again()?;
        Ok(broker)
    }

    fn properties(&self) -> PathBuf {
        self.dir.path().join("server.properties")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    fn java(&self) -> Command {
        let libs = required_env("LAKE_TEST_KAFKA_LIBS");
        let mut command = Command::new(java());
        command
            .args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                repo_root()
                    .join("tests/services/kafka-log4j2.properties")
                    .display()
            ))
            .arg("-cp")
            .arg(format!("{libs}/*"))
            .stdin(Stdio::null());
        command
    }

    /// Starts the broker on its ports and log directory (after [`kill`](Self::kill)).
    pub fn start_again(&mut self) -> Result<()> {
        let log_path = self.log_path();
        // A fresh log per start, so "started" is this start's.
        let log = std::fs::File::create(&log_path)?;
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.properties())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a Kafka broker")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("Kafka Server started") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the broker exited ({status}):\n{text}");
            }
            if Instant::now() >= deadline {
                bail!("the broker did not start within 120 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the broker vanishes mid-conversation.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn kafka(&self) -> Kafka {
        Kafka::at(&format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
