//! `lake catalog serve`: an Iceberg REST catalog.
//!
//! The catalog itself is rustberg (namespaces, tables, commits, multi-table
//! transactions, Cedar authorization). This crate turns lake's configuration
//! into a rustberg app — PostgreSQL or an embedded file for state, an S3 or
//! local warehouse, API keys per role — and serves it on a listener it owns,
//! so port 0 works and the bound address is known before the first request.

mod embedded;
mod readiness;
mod refusals;
mod staging;

pub use embedded::Embedded;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use lake_core::config::{AuditSink, ServerConfig, StorageConfig};
use lake_core::metrics as names;
use lake_core::storage::{self, Location};
pub use readiness::CatalogReadiness;
use rustberg::auth::{ApiKey, ApiKeyBuilder, Auditor, FileSink, RateLimitConfig, StdoutSink};
use rustberg::location::LocationScope;

/// How long in-flight requests may finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest accepted key material after the `rb_` prefix.
const MIN_KEY_MATERIAL: usize = 16;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the catalog server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server settings cannot work; the message says which and how to fix it.
    #[error("catalog server: {0}")]
    Config(String),
    /// The database, the warehouse or the listener could not be opened.
    #[error("catalog server could not start: {0}")]
    Startup(String),
    #[error(transparent)]
    Core(#[from] lake_core::Error),
    #[error("catalog server: {0}")]
    Io(#[from] std::io::Error),
    /// The directory of an embedded catalog could not be made or resolved.
    #[error("cannot use directory {}", path.display())]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An embedded catalog did not open; most often another lake command
    /// holds its database.
    #[error("opening the embedded catalog in {} (is another lake command using it?)", dir.display())]
    Embedded {
        dir: std::path::PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The task serving an embedded catalog panicked or was cancelled.
    #[error("the embedded catalog's task ended abnormally")]
    Task(#[from] tokio::task::JoinError),
}

/// A fresh API key (`rb_` + 43 random characters), for `lake catalog generate-key`.
pub fn generate_key() -> String {
    let (_, plaintext) = ApiKeyBuilder::new("generated", "default").build();
    plaintext.to_string()
}

/// Where the catalog keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// A PostgreSQL URL: the deployment form, shared by any number of replicas.
    Postgres(String),
    /// A directory holding one embedded database file: one process at a time.
    Embedded(std::path::PathBuf),
}

impl Database {
    pub fn parse(value: &str) -> Result<Self> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Database::Postgres(value.to_string()));
        }
        match Location::parse(value)? {
            Location::File(path) => Ok(Database::Embedded(path)),
            Location::S3 { .. } => Err(Error::Config(format!(
                "server.database `{value}` is object storage; the catalog database is \
                 `postgres://…` or a local directory (the warehouse may be on S3)"
            ))),
        }
    }

    fn url(&self) -> String {
        match self {
            Database::Postgres(url) => url.clone(),
            Database::Embedded(path) => format!("file://{}", path.display()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Database::Postgres(url) => lake_core::config::redact_url_password(url),
            Database::Embedded(path) => format!("embedded file in {}", path.display()),
        }
    }
}

/// A catalog bound to its address and ready to serve.
pub struct CatalogServer {
    router: axum::Router,
    /// rustberg's own router, for asking it in-process.
    inner: axum::Router,
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    local_addr: SocketAddr,
    storage: StorageConfig,
    warehouse: Location,
}

impl CatalogServer {
    /// Opens the database and the warehouse, builds the catalog and binds the
    /// listener. Every misconfiguration is reported here, before serving.
    pub async fn bind(server: &ServerConfig, storage: &StorageConfig) -> Result<Self> {
        if !server.insecure_http && server.tls_cert.is_none() {
            return Err(Error::Config(
                "refusing to serve plain HTTP: pass --tls-cert and --tls-key, or \
                 --insecure-http (server.insecure_http) for a trusted network"
                    .into(),
            ));
        }
        let keys = api_keys(server)?;
        if keys.is_empty() && !server.no_auth {
            return Err(Error::Config(
                "no API keys configured, so every request would be refused: pass \
                 --admin-key/--writer-key/--reader-key or add [[server.api_keys]] \
                 (make keys with `lake catalog generate-key`), or --no-auth for a \
                 local experiment"
                    .into(),
            ));
        }

        let warehouse = Location::parse(&server.warehouse)?;
        let database = Database::parse(&server.database)?;
        if let Database::Embedded(dir) = &database {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Startup(format!(
                    "cannot create database directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        set_storage_properties(storage)?;
        storage::probe(storage, &warehouse).await?;

        let scope = LocationScope::parse(&server.location_scope)
            .map_err(|e| Error::Config(e.to_string()))?;
        let builder = rustberg::App::builder()
            .with_catalog_url(database.url())
            .with_warehouse_location(warehouse.to_url())
            .with_location_scope(scope)
            .with_default_tenant_id(&server.tenant)
            .with_rate_limit_config(rate_limit(server))
            .with_auditor(Arc::new(auditor(server)?));
        let app = if server.no_auth {
            tracing::warn!(
                "authentication is off (--no-auth): anyone who can connect may drop tables"
            );
            builder.build().await
        } else {
            builder
                .with_api_keys(keys)
                .build_with_api_keys()
                .await
                .map(|(app, _)| app)
        }
        .map_err(|e| Error::Startup(format!("{} ({})", e, database.describe())))?;

        let tls = match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => {
                // ring and aws-lc-rs are both linked; rustls needs to be told.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Some(
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                        .await
                        .map_err(|e| {
                            Error::Config(format!(
                                "cannot load TLS certificate {} / key {}: {e}",
                                cert.display(),
                                key.display()
                            ))
                        })?,
                )
            }
            _ => None,
        };

        let listener = std::net::TcpListener::bind(server.listen)
            .map_err(|e| Error::Startup(format!("cannot listen on {}: {e}", server.listen)))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        tracing::info!(
            database = %database.describe(),
            warehouse = %warehouse.to_url(),
            "catalog ready"
        );
        // Around rustberg, inside out: staged creates that leave no file
        // under the table's location (staging.rs); plain bodies from
        // rustberg, whose own compression would leave its refusals unreadable
        // to the next layer, which rewords them (refusals.rs); compression as
        // the client asked; metrics of every request.
        let key_names = Arc::new(refusals::KeyNames::new(server)?);
        let inner = app.into_router();
        let staging = staging::Staging {
            inner: inner.clone(),
            warehouse: warehouse.to_url(),
            storage: Arc::new(storage.clone()),
        };
        let router = inner
            .clone()
            .layer(axum::middleware::from_fn_with_state(
                staging,
                staging::stage_without_files,
            ))
            .layer(axum::middleware::from_fn(refusals::uncompressed))
            .layer(axum::middleware::from_fn_with_state(
                key_names,
                refusals::explain_refusals,
            ))
            .layer(tower_http::compression::CompressionLayer::new())
            .layer(axum::middleware::from_fn(record_request));
        Ok(Self {
            router,
            inner,
            listener,
            tls,
            local_addr,
            storage: storage.clone(),
            warehouse,
        })
    }

    /// Starts probing the database and the warehouse every few seconds, for
    /// the health listener's `/ready`; stops when the result is dropped.
    pub fn readiness(&self) -> Arc<CatalogReadiness> {
        CatalogReadiness::watch(
            self.inner.clone(),
            self.storage.clone(),
            self.warehouse.clone(),
        )
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URI clients use.
    pub fn uri(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let handle = axum_server::Handle::new();
        let drain = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("catalog shutting down");
            drain.graceful_shutdown(Some(DRAIN_TIMEOUT));
        });
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        match self.tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(self.listener, tls)?
                    .handle(handle)
                    .serve(service)
                    .await?
            }
            None => {
                axum_server::from_tcp(self.listener)?
                    .handle(handle)
                    .serve(service)
                    .await?
            }
        }
        Ok(())
    }
}

fn api_keys(server: &ServerConfig) -> Result<Vec<ApiKey>> {
    let mut seen = HashMap::new();
    let mut keys = Vec::with_capacity(server.api_keys.len());
    for entry in &server.api_keys {
        let secret = entry.resolve()?;
        let key = secret.expose();
        let material = key.strip_prefix("rb_").unwrap_or_default();
        if material.len() < MIN_KEY_MATERIAL {
            return Err(Error::Config(format!(
                "API key `{}` must be `rb_` followed by at least {MIN_KEY_MATERIAL} \
                 characters; make one with `lake catalog generate-key`",
                entry.name
            )));
        }
        // The same key for the same role twice (a file naming $LAKE_ADMIN_KEY
        // and the --admin-key flag reading it too) is one key; the same key
        // for two roles would make its role a matter of lookup order.
        match seen.get(key) {
            Some(role) if *role == entry.role => continue,
            Some(_) => {
                return Err(Error::Config(format!(
                    "API key `{}` is also given another role; give every role its own key",
                    entry.name
                )));
            }
            None => {
                seen.insert(key.to_string(), entry.role);
            }
        }
        keys.push(
            ApiKeyBuilder::new(&entry.name, &server.tenant)
                .with_role(entry.role.as_str())
                .build_with_key(key),
        );
    }
    Ok(keys)
}

fn rate_limit(server: &ServerConfig) -> RateLimitConfig {
    let limits = &server.rate_limit;
    if !limits.enabled {
        return RateLimitConfig::disabled();
    }
    // rustberg counts per minute; a tenant is many clients, so it gets ten.
    let per_minute = limits.requests_per_second.saturating_mul(60);
    RateLimitConfig::builder()
        .enabled(true)
        .per_ip_requests(per_minute)
        .per_ip_burst(limits.burst)
        .per_tenant_requests(per_minute.saturating_mul(10))
        .per_tenant_burst(limits.burst.saturating_mul(10))
        .auth_fail_limit(limits.max_auth_failures)
        .auth_fail_ban_duration(limits.lockout)
        .build()
}

fn auditor(server: &ServerConfig) -> Result<Auditor> {
    Ok(match AuditSink::parse(&server.audit)? {
        AuditSink::None => Auditor::disabled(),
        AuditSink::Stdout => Auditor::new(Box::new(StdoutSink), true),
        AuditSink::File(path) => {
            let sink = FileSink::open(&path).map_err(|e| {
                Error::Config(format!("cannot open audit file {}: {e}", path.display()))
            })?;
            Auditor::new(Box::new(sink), true)
        }
    })
}

/// rustberg reads storage settings from a process-wide cell that can be set
/// once; a second server in the same process must ask for the same settings.
fn set_storage_properties(storage: &StorageConfig) -> Result<()> {
    static SET: OnceLock<Mutex<Option<HashMap<String, String>>>> = OnceLock::new();
    let props = storage.file_io_properties();
    let cell = SET.get_or_init(|| Mutex::new(None));
    let mut current = cell
        .lock()
        .map_err(|_| Error::Startup("storage settings lock poisoned".into()))?;
    match current.as_ref() {
        Some(existing) if *existing == props => Ok(()),
        Some(_) => Err(Error::Config(
            "a catalog in this process already runs with other storage settings".into(),
        )),
        None => {
            if !props.is_empty() {
                rustberg::catalog::file_io::set_storage_properties(props.clone());
            }
            *current = Some(props);
            Ok(())
        }
    }
}

async fn record_request(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::counter!(
        names::CATALOG_HTTP_REQUESTS_TOTAL,
        "method" => method.clone(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(names::CATALOG_HTTP_REQUEST_DURATION_SECONDS, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_core::Secret;
    use lake_core::config::{ApiKeyConfig, Role};

    fn key(name: &str, role: Role, value: &str) -> ApiKeyConfig {
        ApiKeyConfig {
            name: name.into(),
            role,
            key: Some(Secret::new(value)),
            key_env: None,
        }
    }

    #[test]
    fn generated_keys_are_accepted() {
        let generated = generate_key();
        assert!(generated.starts_with("rb_"));
        let mut server = ServerConfig::default();
        server.api_keys.push(key("admin", Role::Admin, &generated));
        let keys = api_keys(&server).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].roles, vec!["admin".to_string()]);
        assert_eq!(keys[0].tenant_id, "default");
    }

    #[test]
    fn weak_or_repeated_keys_are_refused() {
        let mut server = ServerConfig::default();
        server.api_keys.push(key("a", Role::Admin, "rb_short"));
        assert!(
            api_keys(&server)
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );

        let mut server = ServerConfig::default();
        server
            .api_keys
            .push(key("a", Role::Admin, "plainpasswordthatislong"));
        assert!(api_keys(&server).is_err());

        let same = generate_key();
        let mut server = ServerConfig::default();
        server.api_keys.push(key("a", Role::Admin, &same));
        server.api_keys.push(key("b", Role::Reader, &same));
        assert!(
            api_keys(&server)
                .unwrap_err()
                .to_string()
                .contains("another role")
        );

        let mut server = ServerConfig::default();
        server.api_keys.push(key("file", Role::Admin, &same));
        server.api_keys.push(key("flag", Role::Admin, &same));
        assert_eq!(api_keys(&server).unwrap().len(), 1);
    }

    #[test]
    fn database_forms() {
        assert_eq!(
            Database::parse("postgres://u:p@h/db").unwrap(),
            Database::Postgres("postgres://u:p@h/db".into())
        );
        assert_eq!(
            Database::parse("file:///var/lib/lake").unwrap(),
            Database::Embedded("/var/lib/lake".into())
        );
        assert!(Database::parse("s3://bucket/catalog").is_err());
        let shown = Database::parse("postgres://u:secret@h/db")
            .unwrap()
            .describe();
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[tokio::test]
    async fn plain_http_needs_to_be_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = ServerConfig {
            database: dir.path().join("db").display().to_string(),
            warehouse: dir.path().join("wh").display().to_string(),
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        server
            .api_keys
            .push(key("admin", Role::Admin, &generate_key()));
        let err = CatalogServer::bind(&server, &StorageConfig::default())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("--insecure-http"), "{err}");

        server.insecure_http = true;
        let bound = CatalogServer::bind(&server, &StorageConfig::default())
            .await
            .unwrap();
        assert_ne!(bound.local_addr().port(), 0);
        assert!(bound.uri().starts_with("http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn no_keys_is_refused_unless_no_auth() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerConfig {
            database: dir.path().join("db").display().to_string(),
            warehouse: dir.path().join("wh").display().to_string(),
            listen: "127.0.0.1:0".parse().unwrap(),
            insecure_http: true,
            ..ServerConfig::default()
        };
        let err = CatalogServer::bind(&server, &StorageConfig::default())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("generate-key"), "{err}");
    }
}
