//! `lake catalog serve` against real PostgreSQL and s3s-fs, driven by
//! iceberg-rust's REST client the way any engine would drive it.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use iceberg::{Catalog, NamespaceIdent};
use lake_core::config::Role;
use lake_testkit::{CatalogProcess, CatalogSpec, Services};
use reqwest::StatusCode;
use support::*;

async fn create_medallion_namespaces(catalog: &dyn Catalog) -> Result<()> {
    for ns in ["bronze", "silver", "gold"] {
        catalog
            .create_namespace(&NamespaceIdent::new(ns.to_string()), HashMap::new())
            .await?;
    }
    Ok(())
}

/// Namespaces, an hour-partitioned table, one fast_append, exact rows back:
/// through the writer's client, and through a reader's freshly loaded table.
async fn round_trip(catalog: &CatalogProcess) -> Result<()> {
    let writer = catalog.rest_catalog(Role::Writer).await?;
    create_medallion_namespaces(&writer).await?;
    let mut namespaces: Vec<String> = writer
        .list_namespaces(None)
        .await?
        .into_iter()
        .map(|ns| ns.to_url_string())
        .collect();
    namespaces.sort();
    assert_eq!(namespaces, ["bronze", "gold", "silver"]);

    let table = create_events_table(&writer, "bronze", "events", HashMap::new()).await?;
    let events: Vec<Event> = (0..300).map(|id| Event::numbered(id, 5)).collect();
    let table = append_events(&writer, &table, &events, "round-trip").await?;

    assert_eq!(table.metadata().snapshots().count(), 1);
    assert_same_rows(&read_events(&table).await?, &events);

    // Five hours → five partitions, each file holding exactly its hour's rows.
    let snapshot = table.metadata().current_snapshot().expect("a snapshot");
    let summary = &snapshot.summary().additional_properties;
    assert_eq!(summary["added-records"], "300");
    assert_eq!(summary["added-data-files"], "5");

    let reader = catalog.rest_catalog(Role::Reader).await?;
    let loaded = reader.load_table(&table_ident("bronze", "events")).await?;
    assert_eq!(
        loaded.metadata().current_snapshot_id(),
        table.metadata().current_snapshot_id()
    );
    assert_same_rows(&read_events(&loaded).await?, &events);
    Ok(())
}

#[tokio::test]
async fn postgres_catalog_with_s3_warehouse_round_trips_rows() -> Result<()> {
    let services = Services::from_env();
    let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    round_trip(&catalog).await?;
    // The table lives where the warehouse says: on s3s-fs, under the test's prefix.
    let writer = catalog.rest_catalog(Role::Writer).await?;
    let table = writer.load_table(&table_ident("bronze", "events")).await?;
    let location = table.metadata().location();
    let warehouse = catalog.spec().warehouse.as_deref().expect("warehouse");
    assert!(
        location.starts_with(&format!("{warehouse}/bronze/events")),
        "{location}"
    );
    Ok(())
}

#[tokio::test]
async fn embedded_catalog_with_file_warehouse_round_trips_rows() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog = CatalogProcess::start(CatalogSpec::embedded(dir.path())).await?;
    round_trip(&catalog).await?;
    assert!(dir.path().join("catalog/catalog.redb").is_file());
    assert!(dir.path().join("warehouse/bronze/events/metadata").is_dir());
    Ok(())
}

/// Plain HTTP so the status codes are seen exactly as a client receives them.
async fn status(
    catalog: &CatalogProcess,
    role: Option<Role>,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<StatusCode> {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", catalog.uri()));
    if let Some(role) = role {
        request = request.bearer_auth(catalog.keys().for_role(role));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    Ok(request.send().await?.status())
}

#[tokio::test]
async fn roles_decide_what_a_key_may_do() -> Result<()> {
    let services = Services::from_env();
    let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;

    // No credential at all: 401, on every route that names catalog content.
    assert_eq!(
        status(&catalog, None, get.clone(), "/v1/namespaces", None).await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&catalog, None, get.clone(), "/v1/config", None).await?,
        StatusCode::UNAUTHORIZED
    );
    let anonymous = catalog.anonymous_catalog().await;
    assert!(anonymous.is_ok(), "building a client sends nothing yet");
    assert!(anonymous?.list_namespaces(None).await.is_err());

    // A writer creates the namespace and the table.
    let writer = catalog.rest_catalog(Role::Writer).await?;
    writer
        .create_namespace(&NamespaceIdent::new("bronze".into()), HashMap::new())
        .await?;
    let table = create_events_table(&writer, "bronze", "events", HashMap::new()).await?;
    let events: Vec<Event> = (0..20).map(|id| Event::numbered(id, 2)).collect();
    let table = append_events(&writer, &table, &events, "auth").await?;

    // A reader sees it but cannot create anything: 403.
    assert_eq!(
        status(
            &catalog,
            Some(Role::Reader),
            get.clone(),
            "/v1/namespaces/bronze/tables/events",
            None
        )
        .await?,
        StatusCode::OK
    );
    let create_table = serde_json::json!({
        "name": "forbidden",
        "schema": {"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "required": true, "type": "long"}
        ]}
    });
    assert_eq!(
        status(
            &catalog,
            Some(Role::Reader),
            post.clone(),
            "/v1/namespaces/bronze/tables",
            Some(create_table.clone())
        )
        .await?,
        StatusCode::FORBIDDEN
    );
    let reader = catalog.rest_catalog(Role::Reader).await?;
    assert!(
        create_events_table(&reader, "bronze", "forbidden_too", HashMap::new())
            .await
            .is_err()
    );
    assert_eq!(
        status(
            &catalog,
            Some(Role::Reader),
            post.clone(),
            "/v1/namespaces",
            Some(serde_json::json!({"namespace": ["nope"]}))
        )
        .await?,
        StatusCode::FORBIDDEN
    );

    // Writers create and commit but may not drop.
    assert_eq!(
        status(
            &catalog,
            Some(Role::Writer),
            delete.clone(),
            "/v1/namespaces/bronze/tables/events",
            None
        )
        .await?,
        StatusCode::FORBIDDEN
    );

    // An admin drops with purge: the table is gone and so are its files.
    let table_location = table.metadata().location().to_string();
    let metadata_file = table
        .metadata_location()
        .expect("a committed table has a metadata file")
        .to_string();
    assert!(table.file_io().exists(&metadata_file).await?);
    assert_eq!(
        status(
            &catalog,
            Some(Role::Admin),
            delete,
            "/v1/namespaces/bronze/tables/events?purgeRequested=true",
            None
        )
        .await?,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(
            &catalog,
            Some(Role::Admin),
            get,
            "/v1/namespaces/bronze/tables/events",
            None
        )
        .await?,
        StatusCode::NOT_FOUND
    );
    let admin = catalog.rest_catalog(Role::Admin).await?;
    assert!(!admin.table_exists(&table_ident("bronze", "events")).await?);
    // Purge removes the table's files; poll briefly in case it runs after the answer.
    let mut gone = false;
    for _ in 0..50 {
        if !table.file_io().exists(&metadata_file).await? {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "purge left {metadata_file} (table at {table_location})"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_writers_lose_nothing() -> Result<()> {
    const WRITERS: i64 = 2;
    const APPENDS: i64 = 20;
    const ROWS: i64 = 10;
    let services = Services::from_env();
    let catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let setup = catalog.rest_catalog(Role::Writer).await?;
    setup
        .create_namespace(&NamespaceIdent::new("bronze".into()), HashMap::new())
        .await?;
    // Two writers on one table conflict often; let iceberg retry long enough.
    let props = HashMap::from([
        ("commit.retry.num-retries".to_string(), "100".to_string()),
        ("commit.retry.min-wait-ms".to_string(), "10".to_string()),
        ("commit.retry.max-wait-ms".to_string(), "200".to_string()),
    ]);
    create_events_table(&setup, "bronze", "events", props).await?;

    let mut tasks = Vec::new();
    for writer_id in 0..WRITERS {
        let client = catalog.rest_catalog(Role::Writer).await?;
        tasks.push(tokio::spawn(async move {
            for append in 0..APPENDS {
                let table = client.load_table(&table_ident("bronze", "events")).await?;
                let first = (writer_id * APPENDS + append) * ROWS;
                let events: Vec<Event> = (first..first + ROWS)
                    .map(|id| Event::numbered(id, 3))
                    .collect();
                append_events(&client, &table, &events, &format!("w{writer_id}-a{append}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    let table = setup.load_table(&table_ident("bronze", "events")).await?;
    assert_eq!(
        table.metadata().snapshots().count() as i64,
        WRITERS * APPENDS,
        "one snapshot per append"
    );
    let expected: Vec<Event> = (0..WRITERS * APPENDS * ROWS)
        .map(|id| Event::numbered(id, 3))
        .collect();
    assert_same_rows(&read_events(&table).await?, &expected);
    let summary = &table
        .metadata()
        .current_snapshot()
        .expect("snapshot")
        .summary()
        .additional_properties;
    assert_eq!(
        summary["total-records"],
        (WRITERS * APPENDS * ROWS).to_string()
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_catalog_restarts_with_everything() -> Result<()> {
    let services = Services::from_env();
    let mut catalog = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let writer = catalog.rest_catalog(Role::Writer).await?;
    create_medallion_namespaces(&writer).await?;
    let table = create_events_table(&writer, "silver", "events", HashMap::new()).await?;
    let first: Vec<Event> = (0..50).map(|id| Event::numbered(id, 4)).collect();
    let table = append_events(&writer, &table, &first, "before").await?;
    let snapshot_before = table.metadata().current_snapshot_id();

    catalog.kill_and_restart().await?;

    let writer = catalog.rest_catalog(Role::Writer).await?;
    let mut namespaces: Vec<String> = writer
        .list_namespaces(None)
        .await?
        .into_iter()
        .map(|ns| ns.to_url_string())
        .collect();
    namespaces.sort();
    assert_eq!(namespaces, ["bronze", "gold", "silver"]);
    let table = writer.load_table(&table_ident("silver", "events")).await?;
    assert_eq!(table.metadata().current_snapshot_id(), snapshot_before);
    assert_same_rows(&read_events(&table).await?, &first);

    // And it keeps accepting commits on the old state.
    let second: Vec<Event> = (50..80).map(|id| Event::numbered(id, 4)).collect();
    let table = append_events(&writer, &table, &second, "after").await?;
    let all: Vec<Event> = (0..80).map(|id| Event::numbered(id, 4)).collect();
    assert_same_rows(&read_events(&table).await?, &all);
    assert_eq!(table.metadata().snapshots().count(), 2);
    Ok(())
}

/// The database set up as compose sets it up (deploy/postgres/init-lake.sh,
/// with a password of its own from LAKE_DB_PASSWORD) and catalog/lake.toml, as
/// an operator would use them, with only the hosts swapped for the test
/// services; catalog/init.sql, for a server set up by hand, creates the same.
#[tokio::test]
async fn deployment_files_bring_up_a_postgres_catalog() -> Result<()> {
    use sqlx::Connection;
    let services = Services::from_env();
    let root = lake_testkit::repo_root();
    let host = services
        .postgres_url
        .trim_start_matches("postgres://postgres@")
        .split('/')
        .next()
        .expect("host:port");
    let (pg_host, pg_port) = host.rsplit_once(':').expect("host:port");
    let password = "not-the-default-7f3a";
    let init = std::process::Command::new(root.join("deploy/postgres/init-lake.sh"))
        .env("LAKE_DB_PASSWORD", password)
        .env("POSTGRES_USER", "postgres")
        .env("PGHOST", pg_host)
        .env("PGPORT", pg_port)
        .output()?;
    assert!(
        init.status.success(),
        "init-lake.sh: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // catalog/init.sql holds the same two statements, with its own password.
    let statements = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .split(';')
            // The script's shell lines stand before its first statement.
            .filter_map(|s| s.find("CREATE").map(|at| s[at..].trim().to_string()))
            .collect()
    };
    let by_hand = statements(&std::fs::read_to_string(root.join("catalog/init.sql"))?);
    let compose = statements(
        &std::fs::read_to_string(root.join("deploy/postgres/init-lake.sh"))?
            .replace(":'password'", "'lake-change-me'"),
    );
    assert_eq!(by_hand.len(), 2, "{by_hand:?}");
    assert_eq!(by_hand, compose);
    let mut admin = sqlx::PgConnection::connect(&services.postgres_url).await?;
    // The test server trusts every local login, so the password is not asked
    // for below; that the role has one is checked here.
    let (stored,): (String,) =
        sqlx::query_as("SELECT rolpassword FROM pg_authid WHERE rolname = 'lake'")
            .fetch_one(&mut admin)
            .await?;
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    let mut spec = CatalogSpec::postgres_s3(&services).await?;
    spec.database = None;
    spec.warehouse = None;
    spec.config_file = Some(root.join("catalog/lake.toml"));
    let warehouse = services.fresh_warehouse();
    spec.env = vec![
        (
            "LAKE_SERVER__DATABASE".into(),
            format!("postgres://lake:{password}@{host}/lake_catalog"),
        ),
        ("LAKE_SERVER__WAREHOUSE".into(), warehouse.clone()),
    ];
    let catalog = CatalogProcess::start(spec).await?;
    let writer = catalog.rest_catalog(Role::Writer).await?;
    create_medallion_namespaces(&writer).await?;
    let table = create_events_table(&writer, "gold", "events", HashMap::new()).await?;
    assert!(table.metadata().location().starts_with(&warehouse));

    // The catalog's tables were created in lake_catalog, owned by `lake`.
    let (owner,): (String,) = sqlx::query_as(
        "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'lake_catalog'",
    )
    .fetch_one(&mut admin)
    .await?;
    assert_eq!(owner, "lake");
    let (server, _) = services.postgres_url.rsplit_once('/').expect("url/db");
    let catalog_db = format!("{server}/lake_catalog");
    let mut db = sqlx::PgConnection::connect(&catalog_db).await?;
    let (namespaces,): (i64,) = sqlx::query_as("SELECT count(*) FROM rustberg_namespaces")
        .fetch_one(&mut db)
        .await?;
    assert_eq!(namespaces, 3);
    Ok(())
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &std::path::Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let path = |name: &str| dir.join(name);
    std::fs::write(path("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lake-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    Ok((path("ca.pem"), path("cert.pem"), path("key.pem")))
}

#[tokio::test]
async fn serves_tls_and_exports_metrics_when_asked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = make_certificates(dir.path())?;
    let metrics_port = lake_testkit::free_port();
    let mut spec = CatalogSpec::embedded(dir.path());
    spec.plain_http = false;
    spec.args = vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    let catalog = CatalogProcess::start(spec).await?;
    assert!(
        catalog.uri().starts_with("https://127.0.0.1:"),
        "{}",
        catalog.uri()
    );

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca)?)?)
        .build()?;
    let answer = trusting
        .get(format!("{}/v1/config", catalog.uri()))
        .bearer_auth(&catalog.keys().reader)
        .send()
        .await?;
    assert_eq!(answer.status(), StatusCode::OK);
    // Plain HTTP on the TLS port gets no catalog answer.
    let plain = catalog.uri().replace("https://", "http://");
    let refused = reqwest::Client::new()
        .get(format!("{plain}/v1/config"))
        .bearer_auth(&catalog.keys().reader)
        .send()
        .await;
    assert!(
        refused
            .map(|r| r.status() != StatusCode::OK)
            .unwrap_or(true)
    );

    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"lake_catalog_http_requests_total{method="GET",status="200"} 1"#),
        "{metrics}"
    );
    use lake_core::metrics::{CATALOG_HTTP_REQUEST_DURATION_SECONDS, CATALOG_HTTP_REQUESTS_TOTAL};
    for name in [
        CATALOG_HTTP_REQUESTS_TOTAL,
        CATALOG_HTTP_REQUEST_DURATION_SECONDS,
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    Ok(())
}

/// `/ready` on `--health-addr`, polled until `ready` matches; returns the body.
async fn wait_for_ready(port: u16, ready: bool) -> Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/ready")).await {
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            assert_eq!(status == StatusCode::OK, body["ready"] == true, "{body}");
            if body["ready"] == ready {
                return Ok(body);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "/ready not {ready} within 60 s: {body}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn check<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check `{name}` in {body}"))
}

/// The catalog's health listener: /ready holds while the database answers
/// and the warehouse lists, and goes false, naming the warehouse, while the
/// warehouse cannot be listed (here a file stands where its directory was).
#[tokio::test]
async fn catalog_ready_follows_its_database_and_warehouse() -> Result<()> {
    let services = Services::from_env();
    let port = lake_testkit::free_port();
    let mut spec = CatalogSpec::postgres_s3(&services).await?;
    spec.args = vec!["--health-addr".into(), format!("127.0.0.1:{port}")];
    let catalog = CatalogProcess::start(spec).await?;
    let body = wait_for_ready(port, true).await?;
    assert_eq!(check(&body, "database")["ok"], true, "{body}");
    let warehouse = catalog.spec().warehouse.clone().expect("warehouse");
    let detail = check(&body, "warehouse")["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains(&format!("{warehouse} listed")), "{body}");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health")).await?;
    assert_eq!(health.status(), StatusCode::OK);
    drop(catalog);

    let dir = tempfile::tempdir()?;
    let port = lake_testkit::free_port();
    let mut spec = CatalogSpec::embedded(dir.path());
    spec.args = vec!["--health-addr".into(), format!("127.0.0.1:{port}")];
    let _catalog = CatalogProcess::start(spec).await?;
    wait_for_ready(port, true).await?;
    let warehouse = dir.path().join("warehouse");
    let aside = dir.path().join("warehouse-aside");
    std::fs::rename(&warehouse, &aside)?;
    std::fs::write(&warehouse, "not a directory")?;
    let body = wait_for_ready(port, false).await?;
    assert_eq!(check(&body, "warehouse")["ok"], false, "{body}");
    assert_eq!(check(&body, "database")["ok"], true, "{body}");
    std::fs::remove_file(&warehouse)?;
    std::fs::rename(&aside, &warehouse)?;
    wait_for_ready(port, true).await?;
    Ok(())
}
