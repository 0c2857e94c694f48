//! The catalog `lake quickstart` keeps in a directory, served from inside
//! the calling process on a loopback port for as long as a command needs it.

use std::path::Path;

use lake_core::Config;
use lake_core::config::ServerConfig;
use tokio::sync::oneshot;

use crate::{CatalogServer, Error, Result};

/// A running embedded catalog. `config` reaches it; [`Embedded::stop`]
/// shuts it down cleanly (dropping it stops it too).
pub struct Embedded {
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Embedded {
    /// Whether `dir` holds an embedded catalog, as a quickstart leaves it.
    pub fn exists(dir: &Path) -> bool {
        dir.join("catalog").exists()
    }

    /// Serves the database and warehouse under `dir` (created if missing)
    /// with a key made for this process alone; `config` is the caller's with
    /// its catalog section pointing here.
    pub async fn start(dir: &Path, mut config: Config) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let dir = dir.canonicalize().map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let key = crate::generate_key();
        let server = ServerConfig::embedded(&dir, &key);
        let catalog = CatalogServer::bind(&server, &config.storage)
            .await
            .map_err(|source| Error::Embedded {
                dir: dir.clone(),
                source: Box::new(source),
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
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
