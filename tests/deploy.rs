//! The deployment files agree with what `lake catalog serve` expects.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use lake_core::config::{Overrides, Role};

/// `key=value` lines of a Java properties file (comments and blanks skipped).
fn properties(text: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("not key=value: `{line}`");
        };
        if map
            .insert(key.trim().to_string(), value.trim().to_string())
            .is_some()
        {
            bail!("`{key}` set twice");
        }
    }
    Ok(map)
}

/// The Trino catalog reaches the catalog server of catalog/lake.toml, with a
/// key that server accepts, and creates tables where its location rule
/// allows; its S3 settings are the server's.
#[test]
fn trino_catalog_matches_the_catalog_server() -> Result<()> {
    let root = lake_testkit::repo_root();
    let path = root.join("trino/catalog/iceberg.properties");
    let trino = properties(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let (config, _) =
        lake_core::Config::load(Some(&root.join("catalog/lake.toml")), &Overrides::default())?;
    let get = |key: &str| {
        trino
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("iceberg.properties has no {key}"))
    };

    assert_eq!(get("connector.name")?, "iceberg");
    assert_eq!(get("iceberg.catalog.type")?, "rest");

    // URI: the compose service on the port the server listens on, plain HTTP
    // exactly when the server serves it.
    let scheme = if config.server.insecure_http {
        "http"
    } else {
        "https"
    };
    assert_eq!(
        get("iceberg.rest-catalog.uri")?,
        format!("{scheme}://catalog:{}", config.server.listen.port())
    );

    // Token: a bearer token from an environment variable the server takes a
    // reader key from.
    assert_eq!(get("iceberg.rest-catalog.security")?, "OAUTH2");
    let token = get("iceberg.rest-catalog.oauth2.token")?;
    let variable = token
        .strip_prefix("${ENV:")
        .and_then(|v| v.strip_suffix('}'))
        .with_context(|| format!("the token `{token}` is not read from the environment"))?;
    let key = config
        .server
        .api_keys
        .iter()
        .find(|k| k.key_env.as_deref() == Some(variable))
        .with_context(|| format!("catalog/lake.toml takes no key from {variable}"))?;
    assert_eq!(key.role, Role::Reader, "Trino only reads");
    assert!(
        !trino.contains_key("iceberg.rest-catalog.oauth2.credential"),
        "the catalog has no client-credentials flow"
    );

    // Location rule: under location_scope = "table" the server keeps a table
    // at <warehouse>/<namespace>/<table>, so Trino must not add its suffix.
    assert_eq!(config.server.location_scope, "table");
    assert_eq!(get("iceberg.unique-table-location")?, "false");

    // Files: the same S3 endpoint, region and addressing as the server.
    let s3 = &config.storage.s3;
    assert_eq!(get("fs.native-s3.enabled")?, "true");
    assert_eq!(Some(get("s3.endpoint")?), s3.endpoint.as_deref());
    assert_eq!(Some(get("s3.region")?), s3.region.as_deref());
    assert_eq!(
        get("s3.path-style-access")?,
        s3.path_style_access.to_string()
    );
    for secret in ["s3.aws-access-key", "s3.aws-secret-key"] {
        assert!(
            get(secret)?.starts_with("${ENV:"),
            "{secret} must come from the environment"
        );
    }
    Ok(())
}

#[test]
fn properties_refuse_what_trino_would_misread() {
    assert!(properties("a=1\n# c\n\nb = x=y\n").is_ok_and(|p| p["b"] == "x=y"));
    assert!(properties("a=1\na=2\n").is_err());
    assert!(properties("novalue\n").is_err());
}
