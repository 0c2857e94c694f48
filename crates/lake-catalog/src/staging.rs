//! Tables created by engines that check that a new table's location is empty:
//! Trino's `CREATE TABLE` and `CREATE TABLE AS`.
//!
//! Trino asks the catalog to stage the table (`stage-create`), refuses to go
//! on when anything already lies under the table's location, writes its data
//! files, and commits with an `assert-create` requirement. rustberg writes the
//! staged table's first metadata file under that location at once, so Trino
//! would always find it non-empty. Here a stage leaves no file behind: what
//! rustberg wrote for it is deleted, and the commit that creates the table
//! stages it again, from the commit's own updates, just before rustberg
//! applies them. Nothing is kept between the two requests, so any replica may
//! answer either, and a restart between them loses nothing.
//!
//! Trino stages only when the namespace has a `location`; otherwise it creates
//! the table outright and fails on its own metadata file. The catalog puts a
//! table at `<warehouse>/<namespace>/<table>`, so a namespace without a
//! `location` is shown with `<warehouse>/<namespace>`, which leads to exactly
//! that place.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lake_core::config::StorageConfig;
use lake_core::storage::Location;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// Largest request body read here (a table's schema and first commit).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the staging middleware needs: the catalog within, and where tables go.
#[derive(Clone)]
pub(crate) struct Staging {
    pub(crate) inner: axum::Router,
    pub(crate) warehouse: String,
    pub(crate) storage: Arc<StorageConfig>,
}

/// The request, by what this module does with it.
enum Kind {
    /// `GET …/namespaces/{ns}`.
    LoadNamespace(Vec<String>),
    /// `POST …/namespaces/{ns}/tables`.
    CreateTable(Vec<String>),
    /// `POST …/namespaces/{ns}/tables/{table}`.
    CommitTable(Vec<String>, String),
    Other,
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn classify(method: &Method, path: &str) -> Kind {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(at) = segments.iter().position(|s| *s == "namespaces") else {
        return Kind::Other;
    };
    let namespace = |s: &str| -> Vec<String> {
        // Multi-level namespaces travel joined by the unit separator.
        decode(s).split('\u{1f}').map(str::to_string).collect()
    };
    match (method, &segments[at + 1..]) {
        (&Method::GET, [ns]) => Kind::LoadNamespace(namespace(ns)),
        (&Method::POST, [ns, "tables"]) => Kind::CreateTable(namespace(ns)),
        (&Method::POST, [ns, "tables", table]) => Kind::CommitTable(namespace(ns), decode(table)),
        _ => Kind::Other,
    }
}

/// The middleware.
pub(crate) async fn stage_without_files(
    State(staging): State<Staging>,
    request: Request,
    next: Next,
) -> Response {
    let kind = classify(request.method(), request.uri().path());
    let outcome = match kind {
        Kind::LoadNamespace(namespace) => {
            let response = next.run(request).await;
            staging.with_location(response, &namespace).await
        }
        Kind::CreateTable(namespace) => staging.create(request, next, &namespace).await,
        Kind::CommitTable(namespace, table) => {
            staging.commit(request, next, &namespace, &table).await
        }
        Kind::Other => return next.run(request).await,
    };
    outcome.unwrap_or_else(|e| {
        tracing::error!(error = %e, "table staging failed");
        let body = json!({"error": {
            "message": format!("lake catalog: staging the table failed: {e}"),
            "type": "ServiceUnavailableException",
            "code": 503,
        }});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    })
}

type Outcome = std::result::Result<Response, String>;

async fn read_json(body: Body) -> std::result::Result<(axum::body::Bytes, Option<Value>), String> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    let json = serde_json::from_slice(&bytes).ok();
    Ok((bytes, json))
}

impl Staging {
    /// `<warehouse>/<namespace>`, where the catalog puts the namespace's tables.
    fn namespace_location(&self, namespace: &[String]) -> String {
        format!(
            "{}/{}",
            self.warehouse.trim_end_matches('/'),
            namespace.join("/")
        )
    }

    /// Adds `location` to a loaded namespace's properties when it has none.
    async fn with_location(&self, response: Response, namespace: &[String]) -> Outcome {
        if response.status() != StatusCode::OK {
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        let (bytes, json) = read_json(body).await?;
        let Some(mut json) = json else {
            return Ok(Response::from_parts(parts, Body::from(bytes)));
        };
        if let Some(properties) = json.get_mut("properties").and_then(Value::as_object_mut)
            && !properties.contains_key("location")
        {
            properties.insert(
                "location".into(),
                Value::String(self.namespace_location(namespace)),
            );
        } else if json.get("properties").is_none() {
            json["properties"] = json!({"location": self.namespace_location(namespace)});
        }
        let body = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Response::from_parts(parts, Body::from(body)))
    }

    /// Files under `location`, relative to it.
    async fn files(&self, location: &str) -> std::result::Result<BTreeSet<String>, String> {
        let operator = Location::parse(location)
            .and_then(|l| l.operator(&self.storage))
            .map_err(|e| e.to_string())?;
        let entries = match operator.list_with("/").recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("listing {location}: {e}")),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_string())
            .collect())
    }

    /// A `stage-create` goes to rustberg (which authorizes and validates it);
    /// then the metadata file it wrote is deleted.
    async fn create(&self, request: Request, next: Next, namespace: &[String]) -> Outcome {
        let (parts, body) = request.into_parts();
        let (bytes, json) = read_json(body).await?;
        let staged = json
            .as_ref()
            .and_then(|j| j.get("stage-create"))
            .and_then(Value::as_bool)
            == Some(true);
        let location = json.as_ref().and_then(|j| {
            let name = j.get("name")?.as_str()?;
            Some(
                j.get("location")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}/{name}", self.namespace_location(namespace))),
            )
        });
        let request = Request::from_parts(parts, Body::from(bytes));
        let (true, Some(location)) = (staged, location) else {
            return Ok(next.run(request).await);
        };
        let before = self.files(&location).await?;
        let response = next.run(request).await;
        if response.status().is_success() {
            let operator = Location::parse(&location)
                .and_then(|l| l.operator(&self.storage))
                .map_err(|e| e.to_string())?;
            for path in self.files(&location).await?.difference(&before) {
                operator
                    .delete(path)
                    .await
                    .map_err(|e| format!("deleting the staged {location}/{path}: {e}"))?;
            }
        }
        Ok(response)
    }

    /// A commit asserting that the table does not exist yet is preceded by
    /// the stage it builds on, made from its own updates.
    async fn commit(
        &self,
        request: Request,
        next: Next,
        namespace: &[String],
        table: &str,
    ) -> Outcome {
        let (parts, body) = request.into_parts();
        let (bytes, json) = read_json(body).await?;
        let creating = json
            .as_ref()
            .and_then(|j| j.get("requirements"))
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|r| r["type"] == "assert-create"));
        let stage = json
            .as_ref()
            .filter(|_| creating)
            .and_then(|j| stage_request(table, j.get("updates")?.as_array()?));
        if let Some(stage) = stage {
            let mut path = parts.uri.path().to_string();
            if let Some(cut) = path.rfind('/') {
                path.truncate(cut);
            }
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json");
            for name in [header::AUTHORIZATION, header::HOST] {
                if let Some(value) = parts.headers.get(&name) {
                    builder = builder.header(name, value);
                }
            }
            if let Some(value) = parts.headers.get("x-api-key") {
                builder = builder.header("x-api-key", value);
            }
            let mut staging = builder
                .body(Body::from(stage.to_string()))
                .map_err(|e| e.to_string())?;
            staging.extensions_mut().clone_from(&parts.extensions);
            let staged = match self.inner.clone().oneshot(staging).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if !staged.status().is_success() {
                tracing::warn!(
                    table = %format!("{}.{table}", namespace.join(".")),
                    status = %staged.status(),
                    "staging the table before its creating commit was refused"
                );
                return Ok(staged);
            }
        }
        Ok(next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await)
    }
}

/// The `stage-create` request a creating commit's updates describe: its
/// schema, partition spec, sort order, location and properties.
fn stage_request(table: &str, updates: &[Value]) -> Option<Value> {
    let mut stage = Map::new();
    stage.insert("name".into(), Value::String(table.to_string()));
    stage.insert("stage-create".into(), Value::Bool(true));
    let mut properties = Map::new();
    for update in updates {
        match update["action"].as_str().unwrap_or_default() {
            "add-schema" => {
                stage.insert("schema".into(), update["schema"].clone());
            }
            "add-spec" => {
                stage.insert("partition-spec".into(), update["spec"].clone());
            }
            "add-sort-order" => {
                stage.insert("write-order".into(), update["sort-order"].clone());
            }
            "set-location" => {
                stage.insert("location".into(), update["location"].clone());
            }
            "set-properties" => {
                if let Some(set) = update["updates"].as_object() {
                    properties.extend(set.clone());
                }
            }
            "upgrade-format-version" => {
                properties.insert(
                    "format-version".into(),
                    Value::String(update["format-version"].to_string()),
                );
            }
            _ => {}
        }
    }
    stage.insert("properties".into(), Value::Object(properties));
    // Without a schema there is nothing to stage; rustberg answers the
    // commit itself.
    stage.contains_key("schema").then_some(Value::Object(stage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_method_and_path() {
        assert!(matches!(
            classify(&Method::GET, "/v1/default/namespaces/a%1Fb"),
            Kind::LoadNamespace(ns) if ns == ["a", "b"]
        ));
        assert!(matches!(
            classify(&Method::POST, "/v1/namespaces/gold/tables"),
            Kind::CreateTable(ns) if ns == ["gold"]
        ));
        assert!(matches!(
            classify(&Method::POST, "/v1/default/namespaces/gold/tables/t%20x"),
            Kind::CommitTable(ns, t) if ns == ["gold"] && t == "t x"
        ));
        assert!(matches!(
            classify(&Method::DELETE, "/v1/default/namespaces/gold/tables/t"),
            Kind::Other
        ));
        assert!(matches!(classify(&Method::GET, "/v1/config"), Kind::Other));
    }

    #[test]
    fn a_creating_commit_describes_its_stage() {
        let updates = json!([
            {"action": "assign-uuid", "uuid": "00000000-0000-0000-0000-000000000001"},
            {"action": "upgrade-format-version", "format-version": 2},
            {"action": "add-schema", "schema": {"type": "struct", "schema-id": 0, "fields": []}},
            {"action": "set-current-schema", "schema-id": -1},
            {"action": "add-spec", "spec": {"spec-id": 0, "fields": []}},
            {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
            {"action": "set-location", "location": "s3://b/w/gold/t"},
            {"action": "set-properties", "updates": {"write.format.default": "PARQUET"}},
            {"action": "add-snapshot", "snapshot": {}}
        ]);
        let stage = stage_request("t", updates.as_array().expect("updates")).expect("a stage");
        assert_eq!(
            stage,
            json!({
                "name": "t",
                "stage-create": true,
                "schema": {"type": "struct", "schema-id": 0, "fields": []},
                "partition-spec": {"spec-id": 0, "fields": []},
                "write-order": {"order-id": 0, "fields": []},
                "location": "s3://b/w/gold/t",
                "properties": {"write.format.default": "PARQUET", "format-version": "2"}
            })
        );
        assert_eq!(stage_request("t", &[]), None);
    }
}
