//! The catalog `lake quickstart` keeps in a directory, served from inside
//! this process on a loopback port for as long as a command needs it.

use std::path::Path;

use anyhow::Context;
use lake_catalog::CatalogServer;
use lake_core::Config;
use lake_core::config::ServerConfig;
use tokio::sync::oneshot;

use crate::cli::EmbeddedArg;

/// A running embedded catalog. `config` reaches it; [`Embedded::stop`]
/// shuts it down cleanly (dropping it stops it too).
pub struct Embedded {
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<lake_catalog::Result<()>>>,
}

impl Embedded {
    /// Serves the database and warehouse under `dir` (created if missing)
    /// with a key made for this process alone.
    pub async fn start(dir: &Path, mut config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let key = lake_catalog::generate_key();
        let server = ServerConfig::embedded(&dir, &key);
        let catalog = CatalogServer::bind(&server, &config.storage)
            .await
            .with_context(|| {
                format!(
                    "opening the embedded catalog in {} (is another lake command using it?)",
                    dir.display()
                )
            })?;
        config.catalog.uri = catalog.uri();
        config.catalog.token = Some(lake_core::Secret::new(key));
        config.catalog.warehouse = None;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(catalog.serve(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            config,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops serving and waits until the database is closed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .context("embedded catalog task")?
                .context("embedded catalog")?;
        }
        Ok(())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A catalog client for a reading command: the configured catalog, or the
/// embedded one with `--embedded`.
pub async fn connect(
    config: Config,
    embedded: &EmbeddedArg,
) -> anyhow::Result<(lake_table::LakeCatalog, Option<Embedded>)> {
    let (config, server) = match &embedded.embedded {
        Some(dir) => {
            if !dir.join("catalog").exists() {
                anyhow::bail!(
                    "{} holds no embedded catalog; `lake quickstart --data-dir {}` makes one",
                    dir.display(),
                    dir.display()
                );
            }
            let server = Embedded::start(dir, config).await?;
            (server.config.clone(), Some(server))
        }
        None => (config, None),
    };
    let catalog = lake_table::LakeCatalog::connect(&config)
        .await
        .with_context(|| format!("connecting to the catalog at {}", config.catalog.uri))?;
    Ok((catalog, server))
}

/// Stops the embedded catalog a command started, if it started one.
pub async fn finish(server: Option<Embedded>) -> anyhow::Result<()> {
    match server {
        Some(server) => server.stop().await,
        None => Ok(()),
    }
}
