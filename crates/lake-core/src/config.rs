//! Layered configuration.
//!
//! Precedence, lowest first: built-in defaults, then `lake.toml` in the working
//! directory (or the file named by `--config` / `LAKE_CONFIG`), then `LAKE_*`
//! environment variables, then command-line flags. Environment variables use
//! `__` between levels: `LAKE_CATALOG__TOKEN`, `LAKE_STORAGE__S3__ENDPOINT`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Prefix of every environment variable the configuration reads.
pub const ENV_PREFIX: &str = "LAKE_";
/// The file read from the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "lake.toml";
/// Where `lake catalog serve` listens, and where clients look, by default.
pub const DEFAULT_CATALOG_ADDR: &str = "127.0.0.1:8181";

/// Top-level sections; environment variables outside them are ignored so that
/// unrelated `LAKE_…` variables (a test harness's, a shell's) cannot break loading.
const SECTIONS: [&str; 6] = [
    "catalog",
    "storage",
    "server",
    "telemetry",
    "kafka",
    "pipeline",
];

/// The effective configuration of one `lake` invocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How lake commands reach the Iceberg REST catalog.
    pub catalog: CatalogConfig,
    /// How data and metadata files are read and written.
    pub storage: StorageConfig,
    /// `lake catalog serve`.
    pub server: ServerConfig,
    /// Logs and metrics.
    pub telemetry: TelemetryConfig,
    /// How lake reaches Kafka.
    pub kafka: KafkaConfig,
    /// Which datasets lake works on.
    pub pipeline: PipelineConfig,
}

/// Where the datasets are declared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline directory (`datasets/<name>/dataset.toml`, …) [default:
    /// `./pipeline` when it exists, else the built-in tweets and speedtest].
    pub dir: Option<PathBuf>,
}

/// Kafka connection settings shared by `lake generate` and `lake ingest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Extra librdkafka properties for every client (`security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, …). Secrets here are redacted in
    /// `lake config show` when the key names a password or secret.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".to_string(),
            properties: BTreeMap::new(),
        }
    }
}

/// A value that must never be printed: tokens, keys, passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value, for the one place that has to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

const REDACTED: &str = "<redacted>";

/// Client side of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Base URI of the Iceberg REST catalog, e.g. `http://127.0.0.1:8181`.
    pub uri: String,
    /// Bearer token (a `lake catalog serve` API key, `rb_…`).
    pub token: Option<Secret>,
    /// Warehouse passed to the catalog's `/v1/config`, for catalogs serving several.
    pub warehouse: Option<String>,
    /// How long one catalog request may take before it counts as failed:
    /// a catalog that accepts connections and never answers would otherwise
    /// hold a command forever.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            uri: format!("http://{DEFAULT_CATALOG_ADDR}"),
            token: None,
            warehouse: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Object storage settings shared by the catalog server and every writer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub s3: S3Config,
}

/// S3 or an S3-compatible store (MinIO, s3s-fs, Ceph, R2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL; required for anything that is not AWS.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when an endpoint is set and no region is.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO needs.
    pub path_style_access: bool,
}

impl StorageConfig {
    /// The Iceberg FileIO properties (`s3.endpoint`, …) these settings stand for.
    pub fn file_io_properties(&self) -> HashMap<String, String> {
        let s3 = &self.s3;
        let mut props = HashMap::new();
        if let Some(endpoint) = &s3.endpoint {
            props.insert("s3.endpoint".to_string(), endpoint.clone());
        }
        let region = s3
            .region
            .clone()
            .or_else(|| s3.endpoint.as_ref().map(|_| "us-east-1".to_string()));
        if let Some(region) = region {
            props.insert("s3.region".to_string(), region);
        }
        if let Some(key) = &s3.access_key_id {
            props.insert("s3.access-key-id".to_string(), key.clone());
        }
        if let Some(secret) = &s3.secret_access_key {
            props.insert(
                "s3.secret-access-key".to_string(),
                secret.expose().to_string(),
            );
        }
        if s3.path_style_access {
            props.insert("s3.path-style-access".to_string(), "true".to_string());
        }
        props
    }
}

/// `lake catalog serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one (printed at start).
    pub listen: SocketAddr,
    /// `postgres://user:password@host:port/db`, or a directory for the embedded
    /// single-process database (`./lake-data/catalog`, `file:///var/lib/lake`).
    pub database: String,
    /// Where tables live: `s3://bucket/prefix` or a directory / `file:///…` URL.
    pub warehouse: String,
    /// Serve plain HTTP. Without it the server needs `tls_cert` and `tls_key`.
    pub insecure_http: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept every request without credentials. Local experiments only.
    pub no_auth: bool,
    /// The tenant every API key belongs to.
    pub tenant: String,
    /// Accepted API keys, each with one role.
    pub api_keys: Vec<ApiKeyConfig>,
    /// How far a client-chosen table location may stray: `table` keeps it
    /// under `<warehouse>/<namespace>/<table>`, `warehouse` anywhere inside.
    pub location_scope: String,
    pub rate_limit: RateLimitConfig,
    /// Authorization audit trail: `none`, `stdout`, or `file:/path/audit.jsonl`.
    pub audit: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_CATALOG_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8181))),
            database: "./lake-data/catalog".to_string(),
            warehouse: "./lake-data/warehouse".to_string(),
            insecure_http: false,
            tls_cert: None,
            tls_key: None,
            no_auth: false,
            tenant: "default".to_string(),
            api_keys: Vec::new(),
            location_scope: "table".to_string(),
            rate_limit: RateLimitConfig::default(),
            audit: "none".to_string(),
        }
    }
}

impl ServerConfig {
    /// A catalog for one process: the embedded database and the warehouse
    /// under `dir`, plain HTTP on a free loopback port, one admin key.
    pub fn embedded(dir: &Path, admin_key: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: dir.join("catalog").display().to_string(),
            warehouse: dir.join("warehouse").display().to_string(),
            insecure_http: true,
            api_keys: vec![ApiKeyConfig {
                name: "embedded".into(),
                role: Role::Admin,
                key: Some(Secret::new(admin_key)),
                key_env: None,
            }],
            ..Self::default()
        }
    }
}

/// One accepted API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs and the audit trail.
    pub name: String,
    pub role: Role,
    /// The key itself (`rb_…`); prefer `key_env` in files you commit.
    #[serde(default)]
    pub key: Option<Secret>,
    /// Name of an environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
}

impl ApiKeyConfig {
    /// The key, read from the environment when `key_env` names a variable.
    pub fn resolve(&self) -> Result<Secret> {
        match (&self.key, &self.key_env) {
            (Some(key), None) => Ok(key.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                _ => Err(Error::config(format!(
                    "API key `{}` reads its key from ${var}, which is unset or empty",
                    self.name
                ))),
            },
            (Some(_), Some(_)) => Err(Error::config(format!(
                "API key `{}` sets both `key` and `key_env`; keep one",
                self.name
            ))),
            (None, None) => Err(Error::config(format!(
                "API key `{}` has neither `key` nor `key_env`",
                self.name
            ))),
        }
    }
}

/// What a key may do. `reader`: load and list; `writer`: also create and
/// commit; `admin`: also drop, purge and manage policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Writer,
    Reader,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Writer, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-client request limits and the ban on repeated bad credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per client address. Ingest commits and
    /// table loads count, so keep this well above the pipeline's own rate.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Rejected credentials from one address before it is locked out.
    pub max_auth_failures: u32,
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 1000,
            burst: 2000,
            max_auth_failures: 5,
            lockout: Duration::from_secs(300),
        }
    }
}

/// Logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
    /// A `RUST_LOG`-style filter; the `RUST_LOG` variable wins when set.
    pub log: Option<String>,
    /// Serve Prometheus metrics at `http://<addr>/metrics`. Off when unset.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve `/health` and `/ready` at `http://<addr>/` while a long-running
    /// command (ingest, catalog serve, continuous generate) runs. Off when unset.
    pub health_addr: Option<SocketAddr>,
    /// A Prometheus Pushgateway (`http://pushgateway:9091`) the command pushes
    /// its metrics to when it ends, for batch steps too short to be scraped.
    pub push_gateway: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Command-line values that override everything else, by dotted key
/// (`server.listen`, `catalog.token`).
#[derive(Clone, Debug, Default)]
pub struct Overrides(BTreeMap<String, figment::value::Value>);

impl Overrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` when `value` is `Some`; flags the user did not pass stay out.
    pub fn set<T: Serialize>(&mut self, key: &str, value: Option<T>) -> Result<&mut Self> {
        if let Some(value) = value {
            let value = figment::value::Value::serialize(value)
                .map_err(|e| Error::config(format!("flag for `{key}`: {e}")))?;
            self.0.insert(key.to_string(), value);
        }
        Ok(self)
    }

    /// Sets a boolean switch only when it was turned on.
    pub fn flag(&mut self, key: &str, on: bool) -> Result<&mut Self> {
        self.set(key, on.then_some(true))
    }
}

/// Where the effective configuration came from, for `lake config show`.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<String>,
    pub flags: Vec<String>,
    /// Whether the file, a variable or a flag names `catalog.uri`; otherwise
    /// it is the built-in default, and reading commands may fall back to the
    /// embedded catalog a quickstart left behind.
    pub catalog_uri_given: bool,
}

impl Config {
    /// Loads the configuration: defaults, the file, `LAKE_*` variables, flags.
    ///
    /// `file` must exist when given; without it `lake.toml` is read from the
    /// working directory if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<(Config, Sources)> {
        let mut sources = Sources::default();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));

        let file = match file {
            Some(path) if !path.is_file() => {
                return Err(Error::config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
            sources.file = Some(path.clone());
            sources.catalog_uri_given |=
                Figment::from(Toml::file_exact(path)).contains("catalog.uri");
        }

        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| {
                let section = key.as_str().split("__").next().unwrap_or_default();
                SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
            })
            .split("__");
        sources.env = env
            .iter()
            .map(|(key, _)| {
                format!("{ENV_PREFIX}{}", key.as_str().replace('.', "__")).to_uppercase()
            })
            .collect();
        sources.catalog_uri_given |= Figment::from(env.clone()).contains("catalog.uri");
        figment = figment.merge(env);

        for (key, value) in &overrides.0 {
            figment = figment.merge(Serialized::default(key, value.clone()));
            sources.flags.push(key.clone());
            sources.catalog_uri_given |= key == "catalog.uri";
        }

        let config: Config = figment.extract().map_err(Error::from_figment)?;
        config.validate()?;
        Ok((config, sources))
    }

    /// Checks what serde cannot: values that parse but cannot work.
    pub fn validate(&self) -> Result<()> {
        url::Url::parse(&self.catalog.uri).map_err(|e| {
            Error::config(format!(
                "catalog.uri `{}` is not a URL: {e}",
                self.catalog.uri
            ))
        })?;
        if self.catalog.request_timeout.is_zero() {
            return Err(Error::config(
                "catalog.request_timeout must be longer than 0s: every catalog request would fail",
            ));
        }
        match self.server.location_scope.as_str() {
            "table" | "warehouse" => {}
            other => {
                return Err(Error::config(format!(
                    "server.location_scope must be `table` or `warehouse`, not `{other}`"
                )));
            }
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(Error::config(
                "server.tls_cert and server.tls_key go together; set both or neither",
            ));
        }
        AuditSink::parse(&self.server.audit)?;
        Ok(())
    }

    /// A copy safe to print: every secret replaced, database passwords hidden.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        let hide = |s: &mut Option<Secret>| {
            if s.is_some() {
                *s = Some(Secret::new(REDACTED));
            }
        };
        hide(&mut shown.catalog.token);
        hide(&mut shown.storage.s3.secret_access_key);
        for key in &mut shown.server.api_keys {
            hide(&mut key.key);
        }
        shown.server.database = redact_url_password(&shown.server.database);
        for (key, value) in shown.kafka.properties.iter_mut() {
            if is_secret_property(key) {
                *value = REDACTED.to_string();
            }
        }
        shown
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String> {
        toml::to_string_pretty(&self.redacted())
            .map_err(|e| Error::config(format!("cannot render configuration: {e}")))
    }
}

/// Where the catalog server writes its authorization audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditSink {
    None,
    Stdout,
    File(PathBuf),
}

impl AuditSink {
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "none" | "" => Ok(AuditSink::None),
            "stdout" => Ok(AuditSink::Stdout),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(AuditSink::File(PathBuf::from(path))),
                _ => Err(Error::config(format!(
                    "server.audit must be `none`, `stdout` or `file:/path`, not `{other}`"
                ))),
            },
        }
    }
}

/// librdkafka property names that carry secrets.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "token"]
        .iter()
        .any(|needle| key.contains(needle))
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`.
pub fn redact_url_password(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            // set_password only fails for URLs that cannot carry one, which
            // this one just did.
            let _ = url.set_password(Some(REDACTED));
            url.to_string()
        }
        _ => value.to_string(),
    }
}

#[cfg(test)]
// figment's Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_the_local_catalog() {
        let config = Config::default();
        assert_eq!(config.catalog.uri, "http://127.0.0.1:8181");
        assert_eq!(config.server.listen.port(), 8181);
        assert!(!config.server.insecure_http);
        assert!(config.telemetry.metrics_addr.is_none());
    }

    #[test]
    fn s3_properties_use_iceberg_names_and_default_region() {
        let storage = StorageConfig {
            s3: S3Config {
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: None,
                access_key_id: Some("AK".into()),
                secret_access_key: Some(Secret::new("SK")),
                path_style_access: true,
            },
        };
        let props = storage.file_io_properties();
        assert_eq!(props["s3.endpoint"], "http://127.0.0.1:9000");
        assert_eq!(props["s3.region"], "us-east-1");
        assert_eq!(props["s3.access-key-id"], "AK");
        assert_eq!(props["s3.secret-access-key"], "SK");
        assert_eq!(props["s3.path-style-access"], "true");
        assert_eq!(props.len(), 5);
    }

    #[test]
    fn redaction_hides_every_secret() {
        let mut config = Config::default();
        config.catalog.token = Some(Secret::new("rb_topsecret"));
        config.storage.s3.secret_access_key = Some(Secret::new("s3secret"));
        config.server.database = "postgres://lake:pgsecret@db:5432/lake".into();
        config
            .kafka
            .properties
            .insert("sasl.password".into(), "kafkasecret".into());
        config.server.api_keys.push(ApiKeyConfig {
            name: "etl".into(),
            role: Role::Writer,
            key: Some(Secret::new("rb_writersecret")),
            key_env: None,
        });
        let shown = config.to_redacted_toml().unwrap();
        for secret in [
            "rb_topsecret",
            "s3secret",
            "pgsecret",
            "rb_writersecret",
            "kafkasecret",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        assert!(shown.contains("postgres://lake:%3Credacted%3E@db:5432/lake"));
        assert_eq!(format!("{:?}", Secret::new("x")), "<redacted>");
    }

    #[test]
    fn audit_sink_parses_known_forms_only() {
        assert_eq!(AuditSink::parse("none").unwrap(), AuditSink::None);
        assert_eq!(AuditSink::parse("stdout").unwrap(), AuditSink::Stdout);
        assert_eq!(
            AuditSink::parse("file:/tmp/a.jsonl").unwrap(),
            AuditSink::File("/tmp/a.jsonl".into())
        );
        assert!(AuditSink::parse("syslog").is_err());
        assert!(AuditSink::parse("file:").is_err());
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "lake.toml",
                r#"
                [catalog]
                uri = "http://from-file:1"
                [server]
                warehouse = "s3://file-bucket/wh"
                tenant = "from-file"
                "#,
            )?;
            jail.set_env("LAKE_SERVER__WAREHOUSE", "s3://env-bucket/wh");
            jail.set_env("LAKE_SERVER__TENANT", "from-env");
            // Unrelated LAKE_ variables must not break loading.
            jail.set_env("LAKE_TEST_POSTGRES_URL", "postgres://x");
            let mut flags = Overrides::new();
            flags.set("server.tenant", Some("from-flag")).unwrap();
            let (config, sources) = Config::load(None, &flags).unwrap();
            assert_eq!(config.catalog.uri, "http://from-file:1");
            assert_eq!(config.server.warehouse, "s3://env-bucket/wh");
            assert_eq!(config.server.tenant, "from-flag");
            assert_eq!(sources.file.as_deref(), Some(Path::new("lake.toml")));
            assert!(sources.env.contains(&"LAKE_SERVER__WAREHOUSE".to_string()));
            assert_eq!(sources.flags, vec!["server.tenant".to_string()]);
            Ok(())
        });
    }

    #[test]
    fn the_catalog_uri_counts_as_given_from_any_layer_but_the_defaults() {
        figment::Jail::expect_with(|jail| {
            let given = |flags: &Overrides| Config::load(None, flags).unwrap().1.catalog_uri_given;
            let none = Overrides::new();
            jail.create_file("lake.toml", "[server]\ntenant = \"t\"\n")?;
            assert!(!given(&none), "defaults and a file without catalog.uri");
            let mut flag = Overrides::new();
            flag.set("catalog.uri", Some("http://flag:1")).unwrap();
            assert!(given(&flag), "a flag");
            jail.set_env("LAKE_CATALOG__URI", "http://env:1");
            assert!(given(&none), "a variable");
            jail.clear_env();
            jail.create_file("lake.toml", "[catalog]\nuri = \"http://file:1\"\n")?;
            assert!(given(&none), "the file");
            Ok(())
        });
    }

    #[test]
    fn typos_in_the_file_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("lake.toml", "[catalog]\nurl = \"http://x\"\n")?;
            let err = Config::load(None, &Overrides::new()).unwrap_err();
            assert!(err.to_string().contains("url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let err =
            Config::load(Some(Path::new("/nonexistent/lake.toml")), &Overrides::new()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn api_key_from_env() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MY_KEY", "rb_fromenvironment");
            let key = ApiKeyConfig {
                name: "etl".into(),
                role: Role::Writer,
                key: None,
                key_env: Some("MY_KEY".into()),
            };
            assert_eq!(key.resolve().unwrap().expose(), "rb_fromenvironment");
            let missing = ApiKeyConfig {
                key_env: Some("NOT_SET_ANYWHERE".into()),
                ..key
            };
            assert!(missing.resolve().is_err());
            Ok(())
        });
    }
}
