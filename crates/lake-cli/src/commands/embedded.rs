//! `--embedded [DIR]` of the reading commands: the catalog a quickstart left
//! in a directory, served from inside this process while the command runs.

use std::path::PathBuf;

use anyhow::Context;
use lake_catalog::Embedded;
use lake_core::Config;
use lake_core::config::Sources;

use crate::cli::EmbeddedArg;

/// Where `lake quickstart` keeps its catalog and warehouse by default.
const QUICKSTART_DIR: &str = "./lake-data";

/// A catalog client for a reading command: the embedded one with
/// `--embedded`; else the configured catalog; else, when no catalog is
/// configured anywhere and a quickstart left ./lake-data here, that one.
pub async fn connect(
    config: Config,
    sources: &Sources,
    embedded: &EmbeddedArg,
) -> anyhow::Result<(lake_table::LakeCatalog, Option<Embedded>)> {
    let fallback = PathBuf::from(QUICKSTART_DIR);
    let dir = match &embedded.embedded {
        Some(dir) => Some(dir),
        None if !sources.catalog_uri_given && Embedded::exists(&fallback) => {
            // Said on stderr so that piped output stays the query's alone.
            eprintln!(
                "lake: no catalog configured (catalog.uri); reading the embedded catalog in {QUICKSTART_DIR}"
            );
            Some(&fallback)
        }
        None => None,
    };
    let (config, server) = match dir {
        Some(dir) => {
            if !Embedded::exists(dir) {
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
    if let Some(server) = server {
        server.stop().await?;
    }
    Ok(())
}
