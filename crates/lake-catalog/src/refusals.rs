//! The catalog's `401` and `403` answers, made to say which catalog refused,
//! what was refused, and what to do.
//!
//! rustberg's own messages are deliberately terse ("Access denied", "This
//! request needs a valid credential…"). A client such as Trino shows them
//! verbatim, one catalog among several, so a wrong key or a reader key where
//! a writer key belongs reads like a fault of the engine. The catalog's
//! address as the client reached it (the `Host` header) names it in the
//! client's own terms; for a `403` the key is valid, so naming its
//! configured name and role gives nothing away. The original message stays
//! at the end.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use lake_core::config::{Role, ServerConfig};

/// Error bodies are small JSON documents; anything larger is passed on as is.
const MAX_BODY: usize = 64 * 1024;

/// The configured keys, to name the one a refused request carried.
pub(crate) struct KeyNames {
    keys: Vec<(String, String, Role)>,
}

impl KeyNames {
    pub(crate) fn new(server: &ServerConfig) -> crate::Result<Self> {
        let mut keys = Vec::with_capacity(server.api_keys.len());
        for entry in &server.api_keys {
            let secret = entry.resolve()?;
            keys.push((secret.expose().to_string(), entry.name.clone(), entry.role));
        }
        Ok(Self { keys })
    }

    fn find(&self, presented: &str) -> Option<(&str, Role)> {
        self.keys
            .iter()
            .find(|(key, _, _)| key == presented)
            .map(|(_, name, role)| (name.as_str(), *role))
    }
}

/// The key a request carried: a bearer token or an `X-API-Key` header.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().to_string());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string())
}

/// What a request asked for, in words: `commit to gold.speedtest_agg`.
fn describe(method: &Method, path: &str) -> String {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            // Multi-level namespaces travel joined by the unit separator.
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .replace('\u{1f}', ".")
        })
        .collect();
    let after = |name: &str| {
        segments
            .iter()
            .position(|s| s == name)
            .map(|i| &segments[i + 1..])
    };
    if after("transactions").is_some_and(|rest| rest.first().is_some_and(|s| s == "commit")) {
        return "commit a multi-table transaction".into();
    }
    if let Some(rest) = after("namespaces") {
        match (method, rest) {
            (&Method::POST, []) => return "create a namespace".into(),
            (&Method::DELETE, [ns]) => return format!("drop the namespace {ns}"),
            (&Method::POST, [ns, tables]) if tables == "tables" => {
                return format!("create a table in {ns}");
            }
            (&Method::POST, [ns, tables, table]) if tables == "tables" => {
                return format!("commit to {ns}.{table}");
            }
            (&Method::DELETE, [ns, tables, table]) if tables == "tables" => {
                return format!("drop {ns}.{table}");
            }
            (&Method::POST, [ns, tables]) if tables == "register" => {
                return format!("register a table in {ns}");
            }
            _ => {}
        }
    }
    if after("tables").is_some_and(|rest| rest.first().is_some_and(|s| s == "rename")) {
        return "rename a table".into();
    }
    format!("{method} {path}")
}

/// The refusal's message as this catalog words it.
fn explain(
    status: StatusCode,
    host: &str,
    action: &str,
    key: Option<(&str, Role)>,
    original: &str,
) -> String {
    if status == StatusCode::UNAUTHORIZED {
        return format!(
            "lake catalog at {host} did not accept this request's credential: send one of \
             its API keys as a bearer token (lake: catalog.token or LAKE_CATALOG__TOKEN; \
             Trino: iceberg.rest-catalog.oauth2.token; pyiceberg: token). {original}"
        );
    }
    let holder = match key {
        Some((name, role)) => format!("the key `{name}` has the {role} role, which"),
        None => "this request's role".into(),
    };
    format!(
        "lake catalog at {host}: {holder} may not {action} (readers list and load; writers \
         also create and commit; admins also drop). {original}"
    )
}

/// Asks the catalog within for an uncompressed answer.
pub(crate) async fn uncompressed(mut request: Request, next: Next) -> Response {
    request.headers_mut().remove(header::ACCEPT_ENCODING);
    next.run(request).await
}

/// Rewrites the message of every `401` and `403` the catalog answers.
pub(crate) async fn explain_refusals(
    State(keys): State<Arc<KeyNames>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(ToString::to_string))
        .unwrap_or_else(|| "this address".into());
    let action = describe(request.method(), request.uri().path());
    let presented = presented_key(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a refusal's body");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let Some(message) = json.pointer_mut("/error/message") else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let original = message.as_str().unwrap_or_default().to_string();
    let key = presented.as_deref().and_then(|k| keys.find(k));
    *message = serde_json::Value::String(explain(status, &host, &action, key, &original));
    match serde_json::to_vec(&json) {
        Ok(body) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(body))
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_described_in_words() {
        let table = "/v1/default/namespaces/gold/tables/speedtest_agg";
        assert_eq!(
            describe(&Method::POST, table),
            "commit to gold.speedtest_agg"
        );
        assert_eq!(describe(&Method::DELETE, table), "drop gold.speedtest_agg");
        assert_eq!(
            describe(&Method::POST, "/v1/default/namespaces/a%1Fb/tables"),
            "create a table in a.b"
        );
        assert_eq!(
            describe(&Method::POST, "/v1/default/transactions/commit"),
            "commit a multi-table transaction"
        );
        assert_eq!(
            describe(&Method::POST, "/v1/default/namespaces"),
            "create a namespace"
        );
        assert_eq!(describe(&Method::PUT, "/v1/x"), "PUT /v1/x");
    }

    #[test]
    fn refusals_name_the_catalog_and_the_key() {
        let denied = explain(
            StatusCode::FORBIDDEN,
            "catalog:8181",
            "commit to gold.t",
            Some(("analysts", Role::Reader)),
            "Access denied",
        );
        assert_eq!(
            denied,
            "lake catalog at catalog:8181: the key `analysts` has the reader role, which may \
             not commit to gold.t (readers list and load; writers also create and commit; \
             admins also drop). Access denied"
        );
        let unknown = explain(
            StatusCode::UNAUTHORIZED,
            "127.0.0.1:8181",
            "GET /v1/config",
            None,
            "This request needs a valid credential.",
        );
        assert!(unknown.starts_with(
            "lake catalog at 127.0.0.1:8181 did not accept this request's credential"
        ));
        assert!(unknown.ends_with("This request needs a valid credential."));
    }
}
