use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use lake_catalog::CatalogServer;
use lake_core::Config;
use lake_core::catalog::CatalogHttp;
use lake_core::config::ApiKeyConfig;

use crate::cli::{CatalogCommand, ServeArgs};

pub async fn run(command: CatalogCommand, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        CatalogCommand::Serve(args) => serve(*args, config).await,
        CatalogCommand::Check => check(&config).await,
        CatalogCommand::GenerateKey => {
            writeln!(std::io::stdout(), "{}", lake_catalog::generate_key())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    for (role, key) in args.role_keys() {
        config.server.api_keys.push(ApiKeyConfig {
            name: format!("{role}-flag"),
            role,
            key: Some(lake_core::Secret::new(key)),
            key_env: None,
        });
    }
    let server = CatalogServer::bind(&config.server, &config.storage).await?;
    if let Some(addr) = config.telemetry.health_addr {
        crate::telemetry::serve_health(addr, server.readiness()).await?;
    }
    // One line on stdout that scripts and tests can wait for; logs go to stderr.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "lake catalog listening on {}", server.uri())?;
    stdout.flush()?;
    drop(stdout);
    server
        .serve(super::shutdown_signal())
        .await
        .context("catalog server stopped")?;
    Ok(ExitCode::SUCCESS)
}

async fn check(config: &Config) -> anyhow::Result<ExitCode> {
    let http = CatalogHttp::new(config)?;
    match http.config().await {
        Ok(info) => {
            let warehouse = info
                .defaults
                .get("warehouse")
                .or_else(|| info.overrides.get("warehouse"))
                .map_or("(not advertised)", String::as_str);
            writeln!(
                std::io::stdout(),
                "ok: catalog at {} answers; warehouse {warehouse}; {} endpoints",
                http.uri(),
                info.endpoints.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
