//! The catalog as lake uses it: iceberg's REST client for reads and DDL, and
//! our own HTTP requests for commits, so every commit carries exactly the
//! requirements we chose and a 409 comes back to us instead of being retried
//! against a freshly loaded table.

use std::sync::Arc;

use std::collections::HashMap;

use iceberg::spec::{Schema, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::{CommitTableRequest, CommitTableResponse, RestCatalog};
use lake_core::Config;
use lake_core::catalog::CatalogHttp;
use serde::Serialize;

use crate::error::{Error, Result};

/// How a commit request ended.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    Committed(T),
    /// 409: a requirement failed; nothing was committed.
    Conflict(String),
    /// Not committed, and safe to send again (connection refused, 429, 503).
    Retry(String),
    /// 5xx, or the connection dropped after the request went out: the commit
    /// may have landed.
    Unknown(String),
    /// Any other 4xx: the request itself is wrong; not committed, and sending
    /// it again would not help.
    Refused(String),
}

#[derive(Serialize)]
struct CommitTransactionRequest<'a> {
    #[serde(rename = "table-changes")]
    table_changes: &'a [CommitTableRequest],
}

/// A connection to the Iceberg REST catalog for reading and committing.
#[derive(Clone)]
pub struct LakeCatalog {
    rest: Arc<RestCatalog>,
    http: CatalogHttp,
    /// `/v1` or `/v1/<prefix>` as the catalog's `/v1/config` asked.
    base_path: String,
}

impl std::fmt::Debug for LakeCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeCatalog")
            .field("uri", &self.http.uri())
            .field("base_path", &self.base_path)
            .finish()
    }
}

impl LakeCatalog {
    /// Connects and checks the catalog answers and accepts the token.
    pub async fn connect(config: &Config) -> Result<Self> {
        let http = CatalogHttp::new(config)?;
        let info = http.config().await?;
        let prefix = info
            .overrides
            .get("prefix")
            .or_else(|| info.defaults.get("prefix"))
            .filter(|p| !p.is_empty());
        let base_path = match prefix {
            Some(prefix) => format!("/v1/{}", encode(prefix)),
            None => "/v1".to_string(),
        };
        let rest = lake_core::catalog::rest_catalog(config, &http).await?;
        Ok(Self {
            rest: Arc::new(rest),
            http,
            base_path,
        })
    }

    /// iceberg's REST client, for namespaces, table creation and scans.
    pub fn rest(&self) -> &RestCatalog {
        &self.rest
    }

    pub fn uri(&self) -> &str {
        self.http.uri()
    }

    /// Asks the catalog's `/v1/config`: it answers, and accepts the token.
    pub async fn ping(&self) -> Result<()> {
        self.http.config().await?;
        Ok(())
    }

    /// Every table of every namespace (nested ones included), sorted.
    pub async fn tables(&self) -> Result<Vec<TableIdent>> {
        let mut tables = Vec::new();
        let mut pending: Vec<Option<NamespaceIdent>> = vec![None];
        while let Some(parent) = pending.pop() {
            for namespace in self.rest.list_namespaces(parent.as_ref()).await? {
                tables.extend(self.rest.list_tables(&namespace).await?);
                pending.push(Some(namespace));
            }
        }
        tables.sort_by_key(|t| t.to_string());
        Ok(tables)
    }

    pub async fn load(&self, ident: &TableIdent) -> Result<Table> {
        Ok(self.rest.load_table(ident).await?)
    }

    /// Loads `ident`, creating it (and its namespace) when missing. Two
    /// processes racing to create it both end up with the same table.
    pub async fn ensure_table(
        &self,
        ident: &TableIdent,
        schema: Schema,
        spec: UnboundPartitionSpec,
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        match self.rest.load_table(ident).await {
            Ok(table) => return Ok(table),
            Err(e) if e.kind() == ErrorKind::TableNotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.ensure_namespace(ident.namespace()).await?;
        let creation = TableCreation::builder()
            .name(ident.name().to_string())
            .schema(schema)
            .partition_spec(spec)
            .properties(properties)
            .build();
        match self.rest.create_table(ident.namespace(), creation).await {
            Ok(table) => {
                tracing::info!(table = %ident, "created table");
                Ok(table)
            }
            Err(e) if e.kind() == ErrorKind::TableAlreadyExists => self.load(ident).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the namespace unless it exists.
    pub async fn ensure_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        if !self.rest.namespace_exists(namespace).await? {
            match self
                .rest
                .create_namespace(namespace, Default::default())
                .await
            {
                Ok(_) => {}
                // Another process created it between the check and the create.
                Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn table_path(&self, ident: &TableIdent) -> String {
        format!(
            "{}/namespaces/{}/tables/{}",
            self.base_path,
            encode(&ident.namespace().join("\u{1f}")),
            encode(ident.name())
        )
    }

    /// `POST …/namespaces/{ns}/tables/{table}` with exactly these requirements.
    pub(crate) async fn commit_table(
        &self,
        ident: &TableIdent,
        request: &CommitTableRequest,
        base: &Table,
    ) -> Result<Outcome<Table>> {
        let sent = self
            .http
            .request(reqwest::Method::POST, &self.table_path(ident))
            .json(request)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Ok(transport_outcome(e)),
        };
        let status = response.status();
        if status.is_success() {
            let body: CommitTableResponse = response
                .json()
                .await
                .map_err(|e| Error::Catalog(format!("unreadable commit response: {e}")))?;
            let table = Table::builder()
                .identifier(ident.clone())
                .metadata(body.metadata)
                .metadata_location(body.metadata_location)
                .file_io(base.file_io().clone())
                .runtime(iceberg::Runtime::try_current()?)
                .build()?;
            return Ok(Outcome::Committed(table));
        }
        let body = response.text().await.unwrap_or_default();
        Ok(self.status_outcome(status, &body))
    }

    /// `POST …/transactions/commit`: every change lands, or none does.
    pub(crate) async fn commit_transaction(
        &self,
        requests: &[CommitTableRequest],
    ) -> Result<Outcome<()>> {
        let sent = self
            .http
            .request(
                reqwest::Method::POST,
                &format!("{}/transactions/commit", self.base_path),
            )
            .json(&CommitTransactionRequest {
                table_changes: requests,
            })
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Ok(transport_outcome(e)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome::Committed(()));
        }
        let body = response.text().await.unwrap_or_default();
        Ok(self.status_outcome(status, &body))
    }

    fn status_outcome<T>(&self, status: reqwest::StatusCode, body: &str) -> Outcome<T> {
        let message = self.http.explain(status, body);
        match status.as_u16() {
            409 => Outcome::Conflict(message),
            429 | 503 => Outcome::Retry(message),
            400..=499 => Outcome::Refused(message),
            _ => Outcome::Unknown(message),
        }
    }
}

fn transport_outcome<T>(error: reqwest::Error) -> Outcome<T> {
    if error.is_connect() {
        // The request never reached the catalog.
        Outcome::Retry(format!("catalog unreachable: {error}"))
    } else {
        Outcome::Unknown(format!("no answer to the commit: {error}"))
    }
}

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A partition spec with one field: `transform` of `column`, named
/// `<column>_<transform>`.
pub fn partition_by(
    schema: &Schema,
    column: &str,
    transform: Transform,
) -> Result<UnboundPartitionSpec> {
    let field = schema
        .field_by_name(column)
        .ok_or_else(|| Error::Invalid(format!("no column {column} to partition by")))?;
    let name = match transform {
        Transform::Hour => "hour",
        Transform::Day => "day",
        Transform::Month => "month",
        Transform::Year => "year",
        _ => "part",
    };
    Ok(UnboundPartitionSpec::builder()
        .add_partition_field(field.id, format!("{column}_{name}"), transform)?
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("bronze"), "bronze");
        assert_eq!(encode("a\u{1f}b"), "a%1Fb");
        assert_eq!(encode("with space/slash"), "with%20space%2Fslash");
    }
}
