//! The Trino server `tests/run` started, spoken to over Trino's HTTP client
//! protocol (what its CLI and JDBC driver use), and its catalogs on lake's
//! REST catalog, made from the shipped `trino/catalog/iceberg_catalog.properties`.
//!
//! The server runs with dynamic catalog management, so each test creates
//! catalogs on its own `lake catalog serve`; the file's settings are used as
//! shipped, with only the endpoints and keys of the test substituted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{CatalogProcess, repo_root, required_env};

/// The shipped catalog file, relative to the repository root.
pub const CATALOG_FILE: &str = "trino/catalog/iceberg_catalog.properties";

/// How long one statement may run, queueing included.
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The test's Trino server.
#[derive(Clone, Debug)]
pub struct Trino {
    url: String,
    http: reqwest::Client,
}

/// A result column: its name and Trino type (`bigint`, `varchar`,
/// `timestamp(6) with time zone`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub r#type: String,
}

/// A statement's result, values as Trino's protocol sends them (JSON).
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// The single value of a one-row, one-column result.
    pub fn scalar(&self) -> Result<&Value> {
        match self.rows.as_slice() {
            [row] if row.len() == 1 => Ok(&row[0]),
            _ => bail!("expected one value, got {:?}", self.rows),
        }
    }

    /// Index of the column `name`.
    pub fn index(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .with_context(|| format!("no column {name} in {:?}", self.columns))
    }
}

/// A statement Trino refused or failed.
#[derive(Clone, Debug)]
pub struct QueryError {
    /// Trino's error name: `PERMISSION_DENIED`, `TABLE_NOT_FOUND`, …
    pub name: String,
    /// `USER_ERROR`, `INTERNAL_ERROR`, `EXTERNAL`, …
    pub kind: String,
    pub message: String,
    /// The messages of the causes, outermost first (the REST catalog's
    /// answer is usually one of them).
    pub causes: Vec<String>,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.name, self.kind, self.message)?;
        for cause in &self.causes {
            write!(f, "\n  caused by: {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for QueryError {}

impl Trino {
    /// The server `tests/run` started (`LAKE_TEST_TRINO_URL`).
    pub fn from_env() -> Self {
        Self {
            url: required_env("LAKE_TEST_TRINO_URL"),
            http: reqwest::Client::new(),
        }
    }

    /// The JDBC driver jar (`io.trino:trino-jdbc`) of the server's version.
    pub fn jdbc_driver() -> String {
        required_env("LAKE_TEST_TRINO_JDBC")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The JDBC URL of `catalog`, as DBeaver builds it from host, port and
    /// database.
    pub fn jdbc_url(&self, catalog: &str) -> String {
        format!(
            "jdbc:trino://{}/{catalog}",
            self.url.trim_start_matches("http://")
        )
    }

    /// Runs `sql`; a statement Trino refuses is an error holding a
    /// [`QueryError`].
    pub async fn query(&self, sql: &str) -> Result<Rows> {
        match self.try_query(sql).await? {
            Ok(rows) => Ok(rows),
            Err(e) => Err(anyhow::Error::new(e).context(format!("Trino: {sql}"))),
        }
    }

    /// Runs `sql`: `Err` only when Trino could not be asked; what Trino
    /// answered, success or refusal, is inside.
    pub async fn try_query(&self, sql: &str) -> Result<std::result::Result<Rows, QueryError>> {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let mut response: Value = self
            .http
            .post(format!("{}/v1/statement", self.url))
            .header("X-Trino-User", "lake-tests")
            // lake derives dates and hours in UTC; so must CURRENT_DATE here.
            .header("X-Trino-Time-Zone", "UTC")
            .body(sql.to_string())
            .send()
            .await
            .with_context(|| format!("no Trino at {}", self.url))?
            .error_for_status()?
            .json()
            .await?;
        let mut rows = Rows::default();
        loop {
            if let Some(columns) = response.get("columns").and_then(Value::as_array)
                && rows.columns.is_empty()
            {
                rows.columns = columns
                    .iter()
                    .map(|c| Column {
                        name: c["name"].as_str().unwrap_or_default().to_string(),
                        r#type: c["type"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect();
            }
            if let Some(data) = response.get("data").and_then(Value::as_array) {
                for row in data {
                    rows.rows.push(row.as_array().cloned().unwrap_or_default());
                }
            }
            if let Some(error) = response.get("error") {
                return Ok(Err(query_error(error)));
            }
            let Some(next) = response.get("nextUri").and_then(Value::as_str) else {
                return Ok(Ok(rows));
            };
            if Instant::now() >= deadline {
                bail!("Trino did not finish within {QUERY_TIMEOUT:?}: {sql}");
            }
            response = self
                .http
                .get(next)
                .header("X-Trino-User", "lake-tests")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
        }
    }

    /// Creates the catalog `name` from the shipped catalog file, pointed at
    /// `catalog` and acting with `key` (e.g. its reader key).
    pub async fn create_catalog(
        &self,
        name: &str,
        catalog: &CatalogProcess,
        key: &str,
    ) -> Result<()> {
        let properties = catalog_properties(catalog, key)?;
        self.create_catalog_from(name, &properties).await
    }

    /// `CREATE CATALOG name USING <connector.name> WITH (…)` from properties
    /// as a catalog file holds them.
    pub async fn create_catalog_from(
        &self,
        name: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<()> {
        let connector = properties
            .get("connector.name")
            .context("the catalog file has no connector.name")?;
        let with: Vec<String> = properties
            .iter()
            .filter(|(key, _)| *key != "connector.name")
            .map(|(key, value)| format!("\"{key}\" = '{}'", value.replace('\'', "''")))
            .collect();
        self.query(&format!(
            "CREATE CATALOG {name} USING {connector} WITH ({})",
            with.join(", ")
        ))
        .await?;
        Ok(())
    }

    pub async fn drop_catalog(&self, name: &str) -> Result<()> {
        self.query(&format!("DROP CATALOG IF EXISTS {name}"))
            .await?;
        Ok(())
    }
}

fn query_error(error: &Value) -> QueryError {
    let mut causes = Vec::new();
    let mut info = error.get("failureInfo");
    while let Some(failure) = info {
        if let Some(message) = failure.get("message").and_then(Value::as_str) {
            causes.push(format!(
                "{}: {message}",
                failure["type"].as_str().unwrap_or_default()
            ));
        }
        info = failure.get("cause");
    }
    QueryError {
        name: error["errorName"].as_str().unwrap_or_default().to_string(),
        kind: error["errorType"].as_str().unwrap_or_default().to_string(),
        message: error["message"].as_str().unwrap_or_default().to_string(),
        causes,
    }
}

/// Parses a Java properties file as Trino reads catalog files: `key=value`
/// lines, `#` comments, surrounding blanks ignored.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("not key=value: {line}"))?;
        properties.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(properties)
}

/// The shipped catalog file's properties with this test's endpoints and
/// keys: the REST catalog's URI, the S3 endpoint, and the values the file
/// takes from the environment (`${ENV:…}`): the catalog key and S3's keys.
pub fn catalog_properties(catalog: &CatalogProcess, key: &str) -> Result<BTreeMap<String, String>> {
    let path = repo_root().join(CATALOG_FILE);
    let mut properties = parse_properties(
        &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    )?;
    let s3 = &catalog.spec().storage.s3;
    let endpoint = s3
        .endpoint
        .clone()
        .context("the catalog has no S3 endpoint")?;
    let access_key = s3.access_key_id.clone().context("no S3 access key")?;
    let secret_key = s3
        .secret_access_key
        .as_ref()
        .map(|s| s.expose().to_string())
        .context("no S3 secret key")?;
    let environment: BTreeMap<&str, String> = [
        ("LAKE_READER_KEY", key.to_string()),
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
    ]
    .into_iter()
    .collect();
    for (name, value) in properties.iter_mut() {
        if let Some(variable) = value
            .strip_prefix("${ENV:")
            .and_then(|v| v.strip_suffix('}'))
        {
            *value = environment
                .get(variable)
                .with_context(|| {
                    format!("{name} reads ${{ENV:{variable}}}, which the tests do not know")
                })?
                .clone();
        }
    }
    for (name, value) in [
        ("iceberg.rest-catalog.uri", catalog.uri().to_string()),
        ("s3.endpoint", endpoint),
    ] {
        let slot = properties
            .get_mut(name)
            .with_context(|| format!("{} has no {name}", path.display()))?;
        *slot = value;
    }
    Ok(properties)
}
