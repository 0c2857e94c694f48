//! `--embedded [DIR]` of the reading commands: the catalog a quickstart left
//! in a directory, served from inside this process while the command runs.

use anyhow::Context;
use lake_catalog::Embedded;
use lake_core::Config;

use crate::cli::EmbeddedArg;

/// A catalog client for a reading command: the configured catalog, or the
/// embedded one with `--embedded`.
pub async fn connect(
    config: Config,
    embedded: &EmbeddedArg,
) -> anyhow::Result<(lake_table::LakeCatalog, Option<Embedded>)> {
    let (config, server) = match &embedded.embedded {
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
