//! Command-line grammar. Every flag here only overrides a configuration key;
//! the same setting can live in `lake.toml` or a `LAKE_…` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lake_core::config::{LogFormat, Overrides, Role};

const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Configuration is layered: built-in defaults, then lake.toml (or --config),
then LAKE_* environment variables (LAKE_CATALOG__TOKEN, LAKE_STORAGE__S3__ENDPOINT,
`__` between levels), then flags. `lake config show` prints the result.";

/// lake: a Kafka → Iceberg medallion pipeline (bronze → silver → gold) on one binary.
#[derive(Debug, Parser)]
#[command(name = "lake", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: ./lake.toml when present]
    #[arg(long, global = true, help_heading = GLOBAL, env = "LAKE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Iceberg REST catalog URI (catalog.uri)
    #[arg(long = "catalog", global = true, help_heading = GLOBAL, value_name = "URI")]
    pub catalog_uri: Option<String>,

    /// Catalog API key sent as a bearer token (catalog.token); prefer LAKE_CATALOG__TOKEN
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "KEY", hide_env_values = true)]
    pub token: Option<String>,

    /// Log format (telemetry.log_format); filter with RUST_LOG
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464 (telemetry.metrics_addr)
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(value: LogFormatArg) -> Self {
        match value {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run or check the Iceberg REST catalog
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Inspect the effective configuration
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Serve the Iceberg REST catalog (PostgreSQL or an embedded file for state)
    #[command(after_help = "\
Examples:
  # Local, embedded database, files under ./lake-data:
  lake catalog serve --insecure-http --admin-key \"$(lake catalog generate-key)\"

  # Deployment: PostgreSQL for state, MinIO for files (see catalog/lake.toml):
  lake --config catalog/lake.toml catalog serve

Roles: admin (everything, incl. drop/purge), writer (create, commit), reader (load, list).")]
    Serve(Box<ServeArgs>),
    /// Exit 0 when the configured catalog answers and accepts the token
    Check,
    /// Print a new random API key (rb_…) to give a role
    GenerateKey,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (server.listen) [default: 127.0.0.1:8181]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// postgres://user:pass@host:port/db, or a directory for the embedded database
    /// (server.database) [default: ./lake-data/catalog]
    #[arg(long, value_name = "URL|DIR")]
    pub database: Option<String>,

    /// s3://bucket/prefix or a directory (server.warehouse) [default: ./lake-data/warehouse]
    #[arg(long, value_name = "LOCATION")]
    pub warehouse: Option<String>,

    /// Serve plain HTTP (server.insecure_http); only on a trusted network
    #[arg(long)]
    pub insecure_http: bool,

    /// TLS certificate, PEM (server.tls_cert)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key, PEM (server.tls_key)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Accept this key with the admin role
    #[arg(
        long,
        env = "LAKE_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,

    /// Accept this key with the writer role
    #[arg(
        long,
        env = "LAKE_WRITER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub writer_key: Option<String>,

    /// Accept this key with the reader role
    #[arg(
        long,
        env = "LAKE_READER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub reader_key: Option<String>,

    /// Accept every request without credentials (server.no_auth); local experiments only
    #[arg(long)]
    pub no_auth: bool,
}

impl ServeArgs {
    /// The keys given as flags, by role.
    pub fn role_keys(&self) -> Vec<(Role, &str)> {
        [
            (Role::Admin, &self.admin_key),
            (Role::Writer, &self.writer_key),
            (Role::Reader, &self.reader_key),
        ]
        .into_iter()
        .filter_map(|(role, key)| key.as_deref().map(|k| (role, k)))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted
    Show,
}

impl Cli {
    /// The configuration keys this invocation's flags set.
    pub fn overrides(&self) -> lake_core::Result<Overrides> {
        let g = &self.global;
        let mut o = Overrides::new();
        o.set("catalog.uri", g.catalog_uri.as_ref())?
            .set("catalog.token", g.token.as_ref())?
            .set("telemetry.log_format", g.log_format.map(LogFormat::from))?
            .set("telemetry.metrics_addr", g.metrics_addr)?;
        if let Command::Catalog(CatalogCommand::Serve(serve)) = &self.command {
            o.set("server.listen", serve.listen)?
                .set("server.database", serve.database.as_ref())?
                .set("server.warehouse", serve.warehouse.as_ref())?
                .flag("server.insecure_http", serve.insecure_http)?
                .set("server.tls_cert", serve.tls_cert.as_ref())?
                .set("server.tls_key", serve.tls_key.as_ref())?
                .flag("server.no_auth", serve.no_auth)?;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
