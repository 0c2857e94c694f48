//! Connecting to the Iceberg REST catalog as a client.

use std::collections::HashMap;
use std::time::Duration;

use iceberg::CatalogBuilder;
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage;

/// The properties iceberg's REST client is built with: URI, token, warehouse
/// and the storage settings its FileIO uses for table files.
pub fn rest_properties(config: &Config) -> HashMap<String, String> {
    let mut props = config.storage.file_io_properties();
    props.insert("uri".to_string(), config.catalog.uri.clone());
    if let Some(token) = &config.catalog.token {
        props.insert("token".to_string(), token.expose().to_string());
    }
    if let Some(warehouse) = &config.catalog.warehouse {
        props.insert("warehouse".to_string(), warehouse.clone());
    }
    props
}

/// An iceberg REST catalog client for the configured catalog.
///
/// The connection is checked first, so a wrong URI or token is reported in
/// words rather than as the first failing table operation.
pub async fn connect(config: &Config) -> Result<RestCatalog> {
    let http = CatalogHttp::new(config)?;
    http.config().await?;
    rest_catalog(config, &http).await
}

/// iceberg's REST client for `config`'s catalog, sending its requests
/// through `http`'s client, so that they time out as lake's own do
/// (iceberg's default client waits forever).
pub async fn rest_catalog(config: &Config, http: &CatalogHttp) -> Result<RestCatalog> {
    Ok(RestCatalogBuilder::default()
        .with_client(http.client().clone())
        .with_storage_factory(storage::storage_factory())
        .load("lake", rest_properties(config))
        .await?)
}

/// What `GET /v1/config` answered.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CatalogInfo {
    #[serde(default)]
    pub defaults: HashMap<String, String>,
    #[serde(default)]
    pub overrides: HashMap<String, String>,
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// Plain HTTP access to the catalog, for what iceberg's client does not expose.
#[derive(Clone, Debug)]
pub struct CatalogHttp {
    uri: String,
    token: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
}

impl CatalogHttp {
    pub fn new(config: &Config) -> Result<Self> {
        let timeout = config.catalog.request_timeout;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::catalog(&config.catalog.uri, format!("HTTP client: {e}")))?;
        Ok(Self {
            uri: config.catalog.uri.trim_end_matches('/').to_string(),
            token: config
                .catalog
                .token
                .as_ref()
                .map(|t| t.expose().to_string()),
            client,
            timeout,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request to `path` (starting with `/v1/…`) carrying the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.uri));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET /v1/config`: proves the catalog answers and accepts the token.
    pub async fn config(&self) -> Result<CatalogInfo> {
        let response = self
            .request(reqwest::Method::GET, "/v1/config")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| Error::catalog(&self.uri, format!("unreadable /v1/config: {e}")));
        }
        let body = response.text().await.unwrap_or_default();
        Err(Error::catalog(&self.uri, self.explain(status, &body)))
    }

    fn unreachable(&self, error: reqwest::Error) -> Error {
        let cause = if error.is_connect() {
            "nothing answers there (is `lake catalog serve` running, and is catalog.uri right?)"
                .to_string()
        } else if error.is_timeout() {
            format!(
                "no answer within {:?} (catalog.request_timeout)",
                self.timeout
            )
        } else {
            error.to_string()
        };
        Error::catalog(&self.uri, cause)
    }

    /// Turns an error status into a sentence that says what to change.
    pub fn explain(&self, status: reqwest::StatusCode, body: &str) -> String {
        let detail = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(300).collect());
        match status.as_u16() {
            401 if self.token.is_none() => format!(
                "401 Unauthorized: no token configured; set catalog.token or \
                 LAKE_CATALOG__TOKEN (or pass --token). {detail}"
            ),
            401 => format!("401 Unauthorized: the catalog rejected the token. {detail}"),
            403 => format!("403 Forbidden: the token's role may not do this. {detail}"),
            429 => format!("429 Too Many Requests: rate limited or locked out. {detail}"),
            _ => format!("{status}: {detail}"),
        }
    }
}
