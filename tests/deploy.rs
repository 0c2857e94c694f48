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
    let path = root.join("trino/catalog/iceberg_catalog.properties");
    let trino = properties(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let (config, _) =
        lake_core::Config::load(Some(&root.join("catalog/lake.toml")), &Overrides::default())?;
    let get = |key: &str| {
        trino
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("iceberg_catalog.properties has no {key}"))
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

/// The Kafka and Trino that compose deploys are the versions the suite runs
/// against (pinned in tests/run), and the docs name them.
#[test]
fn compose_deploys_the_kafka_and_trino_the_tests_run() -> Result<()> {
    let root = lake_testkit::repo_root();
    let run = std::fs::read_to_string(root.join("tests/run"))?;
    let pinned = |name: &str| -> Result<String> {
        run.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .with_context(|| format!("tests/run pins no {name}"))
    };
    let (kafka, trino) = (pinned("KAFKA_VERSION")?, pinned("TRINO_VERSION")?);
    let compose = compose()?;
    let image = |svc: &str| -> Result<String> {
        Ok(compose["services"][svc]["image"]
            .as_str()
            .with_context(|| format!("{svc} has no image"))?
            .to_string())
    };
    assert_eq!(image("kafka")?, format!("apache/kafka:{kafka}"));
    assert_eq!(image("trino")?, format!("trinodb/trino:{trino}"));
    for doc in ["README.md", "docs/trino-dbeaver.md", "docs/deployment.md"] {
        let text = std::fs::read_to_string(root.join(doc))?;
        assert!(
            text.contains(&format!("Kafka {kafka}")) && text.contains(&format!("Trino {trino}")),
            "{doc} names the tested Kafka {kafka} and Trino {trino}"
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

// --- compose.yaml -------------------------------------------------------------

fn compose_text() -> Result<String> {
    let path = lake_testkit::repo_root().join("compose.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// compose.yaml with its anchors and `<<` merges resolved.
fn compose() -> Result<serde_norway::Value> {
    parse_compose(&compose_text()?)
}

fn parse_compose(text: &str) -> Result<serde_norway::Value> {
    let mut value: serde_norway::Value = serde_norway::from_str(text)?;
    value.apply_merge()?;
    // Merges nested under anchors (x-lake-service-env merges x-lake-client-env).
    value.apply_merge()?;
    Ok(value)
}

/// What a healthcheck may run in each image (named without its tag): the
/// binaries it ships. An image missing here is a problem, so a new service
/// comes with the knowledge of what its image holds.
const SHIPPED: &[(&str, &[&str])] = &[
    ("postgres", &["pg_isready"]),
    (
        "apache/kafka",
        &["/opt/kafka/bin/kafka-broker-api-versions.sh"],
    ),
    // Alpine: busybox's wget.
    ("chrislusf/seaweedfs", &["wget", "weed"]),
    ("trinodb/trino", &["/usr/lib/trino/bin/health-check"]),
    // Busybox-based.
    ("prom/pushgateway", &["wget"]),
    ("prom/prometheus", &["wget"]),
    // Alpine.
    ("grafana/grafana", &["wget"]),
    // Built from the Dockerfile: the `lake` stage installs curl (checked
    // below); Airflow's and Superset's base images ship it.
    ("lake", &["lake", "curl"]),
    ("lake-airflow", &["curl"]),
    ("lake-superset", &["curl"]),
];

/// Environment names whose values are secrets.
fn is_secret(name: &str) -> bool {
    ["PASSWORD", "SECRET", "_KEY", "TOKEN"]
        .iter()
        .any(|part| name.contains(part))
        && !name.ends_with("_KEY_ID")
}

/// What would keep compose.yaml (given as text) from starting as the docs say:
/// images not pinned, healthchecks that run what their image does not ship,
/// waits on services that cannot report, PostgreSQL checked before it listens
/// on TCP, unbounded Kafka retention, secrets written out instead of taken
/// from variables. Empty when none.
fn compose_problems(text: &str) -> Result<Vec<String>> {
    let compose = parse_compose(text)?;
    let services = compose
        .get("services")
        .and_then(|s| s.as_mapping())
        .context("services")?;
    let name = |k: &serde_norway::Value| k.as_str().unwrap_or_default().to_string();
    let dockerfile = std::fs::read_to_string(lake_testkit::repo_root().join("Dockerfile"))?;
    let mut problems = Vec::new();
    for (key, service) in services {
        let svc = name(key);
        let image = service
            .get("image")
            .and_then(|i| i.as_str())
            .unwrap_or_default();
        let (image_name, tag) = image.rsplit_once(':').unwrap_or((image, ""));
        if service.get("build").is_none() && (tag.is_empty() || tag == "latest") {
            problems.push(format!("{svc}: pin the image `{image}` to a version"));
        }
        match service.get("healthcheck") {
            Some(check) => {
                let test = strings(check.get("test").context("healthcheck.test")?)?;
                let binary = match test.as_slice() {
                    [kind, binary, ..] if kind == "CMD" => binary.clone(),
                    _ => {
                        problems.push(format!(
                            "{svc}: healthcheck {test:?} is not [\"CMD\", binary, …]"
                        ));
                        continue;
                    }
                };
                match SHIPPED.iter().find(|(image, _)| *image == image_name) {
                    Some((_, binaries)) if binaries.contains(&binary.as_str()) => {}
                    Some(_) => problems.push(format!(
                        "{svc}: its healthcheck runs `{binary}`, which {image_name} does not ship"
                    )),
                    None => problems.push(format!(
                        "{svc}: nothing says what {image_name} ships for its healthcheck to run"
                    )),
                }
            }
            None => {
                let waited_for = services.values().any(|other| {
                    other["depends_on"][key]["condition"].as_str()
                        == Some("service_completed_successfully")
                });
                if !waited_for || service.get("restart").and_then(|r| r.as_str()) != Some("no") {
                    problems.push(format!(
                        "{svc}: no healthcheck, and not a one-shot others wait to complete"
                    ));
                }
            }
        }
        if let Some(deps) = service.get("depends_on") {
            let Some(deps) = deps.as_mapping() else {
                problems.push(format!("{svc}: depends_on needs conditions"));
                continue;
            };
            for (dep, spec) in deps {
                let dep_name = name(dep);
                let Some(target) = services.get(dep) else {
                    problems.push(format!("{svc} depends on missing {dep_name}"));
                    continue;
                };
                match spec.get("condition").and_then(|c| c.as_str()) {
                    Some("service_healthy") if target.get("healthcheck").is_none() => {
                        problems.push(format!(
                            "{svc} waits for {dep_name} to be healthy; it has no healthcheck"
                        ));
                    }
                    Some("service_healthy") => {}
                    Some("service_completed_successfully")
                        if target.get("restart").and_then(|r| r.as_str()) != Some("no") =>
                    {
                        problems.push(format!(
                            "{svc} waits for {dep_name} to complete; it restarts instead"
                        ));
                    }
                    Some("service_completed_successfully") => {}
                    other => problems.push(format!("{svc} -> {dep_name}: condition {other:?}")),
                }
            }
        }
        if let Some(env) = service.get("environment").and_then(|e| e.as_mapping()) {
            for (key, value) in env {
                let (key, value) = (name(key), value.as_str().unwrap_or_default());
                let in_url = value
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split_once('@'))
                    .and_then(|(credentials, _)| credentials.split_once(':'))
                    .is_some_and(|(_, password)| !password.starts_with("${"));
                if (is_secret(&key) && !value.is_empty() && !value.starts_with("${")) || in_url {
                    problems.push(format!(
                        "{svc}: {key} is a literal secret; take it from a variable (${{NAME:-default}})"
                    ));
                }
            }
        }
    }
    // Every long-running lake service serves /health and /ready, and its
    // healthcheck asks /ready on that port: /metrics answers even while
    // ingest is stuck in an outage.
    for (key, service) in services {
        let svc = name(key);
        if service.get("image").and_then(|i| i.as_str()) != Some("lake:local") {
            continue;
        }
        let command = strings(&service["command"]).unwrap_or_default();
        let Some(addr) = command
            .windows(2)
            .find(|w| w[0] == "--health-addr")
            .map(|w| w[1].clone())
        else {
            problems.push(format!(
                "{svc}: a long-running lake process without --health-addr"
            ));
            continue;
        };
        let port = addr.rsplit(':').next().unwrap_or_default();
        let test = strings(&service["healthcheck"]["test"]).unwrap_or_default();
        if !test
            .iter()
            .any(|t| t == &format!("http://127.0.0.1:{port}/ready"))
        {
            problems.push(format!(
                "{svc}: its healthcheck {test:?} must ask http://127.0.0.1:{port}/ready"
            ));
        }
    }
    // The `lake` stage installs what SHIPPED says it has.
    let lake_stage = dockerfile
        .split("\nFROM ")
        .find(|stage| {
            stage
                .lines()
                .next()
                .is_some_and(|l| l.ends_with(" AS lake"))
        })
        .context("the Dockerfile has no `lake` stage")?;
    if !lake_stage.contains("curl") {
        problems.push("the Dockerfile's lake stage does not install curl".into());
    }
    // pg_isready through the socket passes during initialisation, before
    // PostgreSQL listens on TCP, which is all the catalog can use.
    let postgres = strings(&compose["services"]["postgres"]["healthcheck"]["test"])?;
    if !postgres
        .windows(2)
        .any(|w| w[0] == "-h" && w[1] == "127.0.0.1")
    {
        problems.push(format!(
            "postgres: the healthcheck {postgres:?} must ask over TCP (-h 127.0.0.1)"
        ));
    }
    // Kafka keeps what the generators write for a bounded time and size.
    let kafka = environment(&compose["services"]["kafka"])?;
    let bounded = |key: &str, most: u64| {
        kafka
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0 && v <= most)
    };
    if !bounded("KAFKA_LOG_RETENTION_HOURS", 72) || !bounded("KAFKA_LOG_RETENTION_BYTES", 16 << 30)
    {
        problems.push(
            "kafka: retention must be bounded in hours (≤ 72) and bytes per partition (≤ 16 GiB)"
                .into(),
        );
    }
    Ok(problems)
}

/// compose.yaml as it stands has none of the problems above.
#[test]
fn compose_would_start() -> Result<()> {
    let problems = compose_problems(&compose_text()?)?;
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

/// Each check catches its mistake: a copy of compose.yaml broken on purpose
/// in one place has the problem that names it.
#[test]
fn compose_checks_fail_on_a_broken_copy() -> Result<()> {
    let text = compose_text()?;
    let cases = [
        (
            "an unpinned image",
            "image: trinodb/trino:476",
            "image: trinodb/trino:latest",
            "trino: pin the image",
        ),
        (
            "a healthcheck its image cannot run",
            r#"["CMD", "wget", "-qO", "/dev/null", "http://127.0.0.1:9000/healthz"]"#,
            r#"["CMD", "curl", "-fsS", "http://127.0.0.1:9000/healthz"]"#,
            "s3: its healthcheck runs `curl`, which chrislusf/seaweedfs does not ship",
        ),
        (
            "an image nothing is known about",
            "image: prom/pushgateway:v1.11.1",
            "image: example/pushgateway:v1.11.1",
            "pushgateway: nothing says what example/pushgateway ships",
        ),
        (
            "a wait for health on a one-shot",
            "      s3-init:\n        condition: service_completed_successfully",
            "      s3-init:\n        condition: service_healthy",
            "catalog waits for s3-init to be healthy; it has no healthcheck",
        ),
        (
            "pg_isready over the socket",
            r#""pg_isready", "-h", "127.0.0.1", "#,
            r#""pg_isready", "#,
            "postgres: the healthcheck",
        ),
        (
            "unbounded Kafka retention",
            "      KAFKA_LOG_RETENTION_BYTES: ${KAFKA_RETENTION_BYTES_PER_PARTITION:-1073741824}\n",
            "",
            "kafka: retention must be bounded",
        ),
        (
            "a lake service without its health listener",
            r#""ingest", "tweets", "speedtest", "--metrics-addr", "0.0.0.0:9464", "--health-addr", "0.0.0.0:9465","#,
            r#""ingest", "tweets", "speedtest", "--metrics-addr", "0.0.0.0:9464","#,
            "ingest: a long-running lake process without --health-addr",
        ),
        (
            "a healthcheck asking /metrics",
            r#""http://127.0.0.1:9465/ready"]"#,
            r#""http://127.0.0.1:9464/metrics"]"#,
            "catalog: its healthcheck",
        ),
        (
            "a literal password in a URL",
            "postgres://lake:${LAKE_DB_PASSWORD:-lake-change-me}@",
            "postgres://lake:lake-change-me@",
            "catalog: LAKE_SERVER__DATABASE is a literal secret",
        ),
    ];
    for (what, from, to, expected) in cases {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{what}: `{from}` is not in compose.yaml once"
        );
        let problems = compose_problems(&text.replacen(from, to, 1))?;
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{what}: {problems:#?}"
        );
    }
    let literal = text.replacen(
        "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:-admin-change-me}",
        "GF_SECURITY_ADMIN_PASSWORD: admin-change-me",
        1,
    );
    assert_eq!(
        compose_problems(&literal)?,
        [
            "grafana: GF_SECURITY_ADMIN_PASSWORD is a literal secret; take it from a variable (${NAME:-default})"
        ]
    );
    Ok(())
}

/// `${NAME:-default}` → default, as compose interpolates with nothing in .env;
/// `$$` → `$`.
fn interpolate(text: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').context("unclosed ${")?;
            let (_, default) = inner[..end]
                .split_once(":-")
                .with_context(|| format!("`${{{}}}` has no default", &inner[..end]))?;
            out.push_str(default);
            rest = &inner[end + 1..];
        } else {
            bail!("bare `$` in `{text}`");
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn strings(value: &serde_norway::Value) -> Result<Vec<String>> {
    value
        .as_sequence()
        .context("a list")?
        .iter()
        .map(|v| {
            let s = v.as_str().context("a string")?;
            interpolate(s)
        })
        .collect()
}

fn environment(service: &serde_norway::Value) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    if let Some(map) = service.get("environment").and_then(|e| e.as_mapping()) {
        for (key, value) in map {
            let key = key.as_str().context("env name")?.to_string();
            let value = match value {
                serde_norway::Value::String(s) => interpolate(s)?,
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                other => bail!("{key}: {other:?}"),
            };
            env.insert(key, value);
        }
    }
    Ok(env)
}

/// Stage names of the Dockerfile (`FROM … AS name`).
fn dockerfile_stages() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(lake_testkit::repo_root().join("Dockerfile"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .get(3)
                .map(|s| s.to_string())
        })
        .collect())
}

/// The subcommands `lake --help` lists.
fn lake_commands() -> Result<Vec<String>> {
    let out = lake_testkit::run_lake(&["--help"])?;
    let help = String::from_utf8(out.stdout)?;
    Ok(help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// `lake ARGS --help` with `env`: clap has parsed every argument before it
/// reaches `--help`, so an unknown subcommand, flag or value fails here.
fn lake_accepts(args: &[String], env: &BTreeMap<String, String>) -> Result<()> {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push("--help");
    lake_testkit::run_lake_ok(&all, env.clone())?;
    Ok(())
}

/// Every service comes from an image or a Dockerfile stage, publishes exactly
/// the ports the docs list, and waits only for services that start without a
/// profile; every `lake` command and environment in it is one lake accepts.
/// (Pins, healthchecks and start conditions: [`compose_would_start`].)
#[test]
fn compose_services_build_publish_check_and_start_in_order() -> Result<()> {
    let root = lake_testkit::repo_root();
    let compose = compose()?;
    let services = compose
        .get("services")
        .and_then(|s| s.as_mapping())
        .context("services")?;
    let name = |k: &serde_norway::Value| k.as_str().unwrap_or_default().to_string();
    let stages = dockerfile_stages()?;
    let commands = lake_commands()?;
    let (config, _) =
        lake_core::Config::load(Some(&root.join("catalog/lake.toml")), &Overrides::default())?;

    let expected_ports: BTreeMap<&str, Vec<&str>> = [
        ("kafka", vec!["19092:19092"]),
        ("s3", vec!["9000:9000"]),
        ("catalog", vec!["8181:8181"]),
        ("trino", vec!["8080:8080"]),
        ("airflow", vec!["8081:8080"]),
        ("pushgateway", vec!["9091:9091"]),
        ("prometheus", vec!["9090:9090"]),
        ("grafana", vec!["3000:3000"]),
        ("superset", vec!["8088:8088"]),
    ]
    .into();
    let mut lake_services = 0;
    for (key, service) in services {
        let svc = name(key);
        // Image or build.
        let image = service.get("image").and_then(|i| i.as_str());
        match service.get("build") {
            Some(build) => {
                let target = build.get("target").and_then(|t| t.as_str());
                let target = target.with_context(|| format!("{svc}: build without a target"))?;
                assert!(
                    stages.iter().any(|s| s == target),
                    "{svc}: no stage {target}"
                );
                assert_eq!(build.get("context").and_then(|c| c.as_str()), Some("."));
                assert!(
                    image.is_some_and(|i| i.ends_with(":local")),
                    "{svc}: name the built image"
                );
            }
            // Pinned: compose_problems.
            None => {
                image.with_context(|| format!("{svc}: neither image nor build"))?;
            }
        }
        // Ports.
        let ports = match service.get("ports") {
            Some(p) => strings(p)?,
            None => Vec::new(),
        };
        let want: Vec<String> = expected_ports
            .get(svc.as_str())
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(ports, want, "{svc}: published ports");
        // Healthchecks and start order: compose_problems; here, that no
        // service waits for one that only starts under a profile.
        if let Some(deps) = service.get("depends_on").and_then(|d| d.as_mapping()) {
            for (dep, _) in deps {
                let target = &services[dep];
                assert!(
                    target.get("profiles").is_none() || service.get("profiles").is_some(),
                    "{svc} depends on {}, which only starts under a profile",
                    name(dep)
                );
            }
        }
        // Host paths mounted exist in the repository.
        if let Some(volumes) = service.get("volumes") {
            for volume in strings(volumes)? {
                if let Some(path) = volume.strip_prefix("./") {
                    let host = path.split(':').next().unwrap_or_default();
                    assert!(root.join(host).exists(), "{svc}: ./{host} does not exist");
                }
            }
        }
        // lake commands and environments.
        if image == Some("lake:local") {
            lake_services += 1;
            let mut env = environment(service)?;
            if env.get("LAKE_CONFIG").map(String::as_str) == Some("/etc/lake/lake.toml") {
                // The Dockerfile copies catalog/lake.toml there.
                env.insert(
                    "LAKE_CONFIG".into(),
                    root.join("catalog/lake.toml").display().to_string(),
                );
            }
            let command = strings(service.get("command").context("command")?)?;
            assert!(
                commands.contains(&command[0]),
                "{svc}: `lake {}` is not in `lake --help` ({commands:?})",
                command[0]
            );
            lake_accepts(&command, &env)?;
            lake_testkit::run_lake_ok(&["config", "show"], env.clone())
                .with_context(|| format!("{svc}: lake refuses its environment"))?;
            let check = strings(&service["healthcheck"]["test"])?;
            if check.get(1).map(String::as_str) == Some("lake") {
                lake_accepts(&check[2..], &env)?;
            }
        }
    }
    assert_eq!(
        lake_services, 5,
        "catalog, two generators, ingest and run (profile live) run the lake image"
    );

    // The catalog service listens where Trino and the clients look for it.
    let catalog = &services["catalog"];
    assert_eq!(config.server.listen.port(), 8181);
    let client_env = environment(&services["ingest"])?;
    assert_eq!(client_env["LAKE_CATALOG__URI"], "http://catalog:8181");
    let catalog_env = environment(catalog)?;
    assert_eq!(
        client_env["LAKE_CATALOG__TOKEN"],
        catalog_env["LAKE_WRITER_KEY"]
    );
    assert_eq!(
        environment(&services["trino"])?["LAKE_READER_KEY"],
        catalog_env["LAKE_READER_KEY"]
    );
    // The `lake` role gets the password the catalog's database URL carries:
    // the same variable with the same default.
    let raw = |svc: &str, key: &str| {
        services[svc]["environment"][key]
            .as_str()
            .map(str::to_string)
    };
    let password = raw("postgres", "LAKE_DB_PASSWORD").context("postgres: LAKE_DB_PASSWORD")?;
    let url = raw("catalog", "LAKE_SERVER__DATABASE").context("catalog: LAKE_SERVER__DATABASE")?;
    assert!(password.starts_with("${LAKE_DB_PASSWORD:-"), "{password}");
    assert_eq!(
        url,
        format!("postgres://lake:{password}@postgres:5432/lake_catalog")
    );
    assert_eq!(
        strings(&services["postgres"]["volumes"])?[1],
        "./deploy/postgres/init-lake.sh:/docker-entrypoint-initdb.d/lake.sh:ro"
    );
    assert_eq!(
        strings(&services["trino"]["volumes"])?,
        ["./trino:/etc/trino:ro"]
    );
    assert_eq!(
        strings(&services["airflow"]["volumes"])?,
        ["./airflow/dags:/opt/airflow/dags:ro"]
    );
    // Every scrape target of Prometheus is a lake service serving /metrics on 9464.
    let prometheus: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(
        root.join("deploy/prometheus/prometheus.yml"),
    )?)?;
    let names = strings(&prometheus["scrape_configs"][0]["dns_sd_configs"][0]["names"])?;
    assert_eq!(
        names,
        [
            "catalog",
            "ingest",
            "run",
            "generate-tweets",
            "generate-speedtest"
        ]
    );
    for target in &names {
        let command = strings(&services[target.as_str()]["command"])?;
        assert!(
            command
                .windows(2)
                .any(|w| w[0] == "--metrics-addr" && w[1] == "0.0.0.0:9464"),
            "{target} does not serve metrics on 9464: {command:?}"
        );
    }
    // A metrics address in the environment would be inherited by every
    // `docker compose exec … lake …` and collide with the service's own.
    for (key, service) in services {
        assert!(
            !environment(service)?.contains_key("LAKE_TELEMETRY__METRICS_ADDR"),
            "{}: pass --metrics-addr in the command instead",
            name(key)
        );
    }
    assert_eq!(
        environment(&services["airflow"])?["LAKE_TELEMETRY__PUSH_GATEWAY"],
        "http://pushgateway:9091"
    );
    Ok(())
}

// --- Grafana ------------------------------------------------------------------

/// Every PromQL expression of a dashboard, nested rows included.
fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The metric names an expression selects: identifiers followed by a label
/// matcher or a range, and every `lake_` identifier.
fn selected_metrics(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_')
            {
                i += 1;
            }
            let ident = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            if ident.starts_with("lake_") || matches!(next, Some('{') | Some('[')) {
                names.push(ident.to_string());
            }
        } else if c == '"' {
            // Skip label values.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

/// The provisioned dashboard selects only metrics lake exports (histograms
/// through their `_bucket` series), shows every one of them, and has the
/// panels operators look for.
#[test]
fn grafana_dashboard_references_only_metrics_lake_exports() -> Result<()> {
    let root = lake_testkit::repo_root();
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("deploy/grafana/dashboards/lake.json"),
    )?)?;
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "{} expressions", exprs.len());
    let exported = lake_core::metrics::ALL;
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        let names = selected_metrics(expr);
        assert!(!names.is_empty(), "`{expr}` selects no metric");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| base.ends_with("_seconds") && exported.contains(base))
                })
                .unwrap_or(&name);
            assert!(
                exported.contains(&base),
                "`{name}` in `{expr}` is not a metric lake exports (lake_core::metrics::ALL)"
            );
            used.insert(base.to_string());
        }
    }
    let unused: Vec<_> = exported.iter().filter(|m| !used.contains(**m)).collect();
    assert!(unused.is_empty(), "exported but on no panel: {unused:?}");

    let titles: Vec<String> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .filter_map(|p| p["title"].as_str().map(str::to_lowercase))
        .collect();
    for topic in [
        "throughput",
        "lag",
        "commit latency",
        "rejects",
        "quarantine",
        "compaction",
        "freshness",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel about {topic}: {titles:?}"
        );
    }
    // The provisioning points Grafana at this folder and at Prometheus.
    let provider =
        std::fs::read_to_string(root.join("deploy/grafana/provisioning/dashboards/lake.yml"))?;
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    let datasource = std::fs::read_to_string(
        root.join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )?;
    assert!(
        datasource.contains("uid: prometheus")
            && datasource.contains("url: http://prometheus:9090")
    );
    Ok(())
}

#[test]
fn the_dashboard_check_catches_foreign_metrics() {
    assert_eq!(
        selected_metrics("sum by (le, table) (rate(lake_x_seconds_bucket{table=\"a_b\"}[5m]))"),
        ["lake_x_seconds_bucket"]
    );
    assert_eq!(selected_metrics("up{job=\"lake\"}"), ["up"]);
    assert_eq!(
        selected_metrics("rate(process_cpu_seconds_total[1m])"),
        ["process_cpu_seconds_total"]
    );
}

// --- Superset -----------------------------------------------------------------

/// Every YAML file under `dir` (recursively), by path relative to it.
fn yaml_tree(dir: &std::path::Path) -> Result<BTreeMap<String, serde_norway::Value>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let relative = path.strip_prefix(dir)?.display().to_string();
                let value = serde_norway::from_str(&std::fs::read_to_string(&path)?)
                    .with_context(|| format!("parsing {relative}"))?;
                out.insert(relative, value);
            }
        }
    }
    Ok(out)
}

fn text<'a>(value: &'a serde_norway::Value, key: &str) -> Result<&'a str> {
    value[key]
        .as_str()
        .with_context(|| format!("no `{key}` in {value:?}"))
}

/// The Superset bundle hangs together (charts → datasets → the database,
/// dashboards → charts), points at the Trino of compose.yaml and its lake
/// catalog, and every dataset column and metric is one lake's gold tables
/// have: each is queried through `lake sql` on tables `lake quickstart` built.
#[test]
fn superset_dashboards_read_columns_lakes_gold_tables_have() -> Result<()> {
    let root = lake_testkit::repo_root();
    let bundle = yaml_tree(&root.join("deploy/superset/dashboards"))?;
    let of_kind = |kind: &str| -> Vec<(&String, &serde_norway::Value)> {
        bundle
            .iter()
            .filter(|(path, _)| path.starts_with(&format!("{kind}/")))
            .collect()
    };
    assert_eq!(text(&bundle["metadata.yaml"], "type")?, "Dashboard");

    // The database: Trino's service and port, and its lake catalog.
    let databases = of_kind("databases");
    assert_eq!(databases.len(), 1);
    let database = databases[0].1;
    let trino = properties(&std::fs::read_to_string(
        root.join("trino/config.properties"),
    )?)?;
    let catalog_name = "iceberg_catalog";
    assert!(
        root.join(format!("trino/catalog/{catalog_name}.properties"))
            .is_file()
    );
    assert_eq!(
        text(database, "sqlalchemy_uri")?,
        format!(
            "trino://lake@trino:{}/{catalog_name}",
            trino["http-server.http.port"]
        )
    );
    assert!(compose()?["services"]["trino"].is_mapping());
    let database_uuid = text(database, "uuid")?;

    // Datasets on gold tables; their columns and metrics, queried for real.
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().display().to_string();
    lake_testkit::run_lake_ok(
        &[
            "quickstart",
            "--records",
            "2000",
            "--seed",
            "5",
            "--data-dir",
            &data_dir,
        ],
        Vec::<(String, String)>::new(),
    )?;
    let embedded = format!("--embedded={data_dir}");
    let query = |sql: &str| -> Result<Vec<serde_json::Value>> {
        let out = lake_testkit::run_lake_ok(
            &["sql", &embedded, "--format", "json", sql],
            Vec::<(String, String)>::new(),
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let mut datasets = BTreeMap::new();
    for (path, dataset) in of_kind("datasets") {
        let table = text(dataset, "table_name")?;
        assert_eq!(text(dataset, "schema")?, "gold", "{path}");
        assert_eq!(text(dataset, "database_uuid")?, database_uuid, "{path}");
        let columns: Vec<&str> = dataset["columns"]
            .as_sequence()
            .context("columns")?
            .iter()
            .map(|c| text(c, "column_name"))
            .collect::<Result<_>>()?;
        let dttm = text(dataset, "main_dttm_col")?;
        assert!(columns.contains(&dttm), "{path}: {dttm}");
        let metrics: Vec<(&str, &str)> = dataset["metrics"]
            .as_sequence()
            .context("metrics")?
            .iter()
            .map(|m| Ok((text(m, "metric_name")?, text(m, "expression")?)))
            .collect::<Result<_>>()?;
        let select = columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = query(&format!("SELECT {select} FROM gold.{table} LIMIT 1"))?;
        assert_eq!(rows.len(), 1, "gold.{table} is empty after quickstart");
        let aggregates = metrics
            .iter()
            .map(|(name, e)| format!("{e} AS \"{name}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let totals = query(&format!("SELECT {aggregates} FROM gold.{table}"))?;
        for (name, _) in &metrics {
            // Sentiment averages may be negative; every other metric counts something.
            let value = totals[0][*name].as_f64();
            assert!(
                value.is_some_and(|v| v > 0.0 || *name == "avg_sentiment"),
                "gold.{table}: metric {name} = {:?}",
                totals[0][*name]
            );
        }
        // The table has no column the dataset leaves out.
        let all = query(&format!("SELECT * FROM gold.{table} LIMIT 1"))?;
        let mut have: Vec<&String> = all[0].as_object().context("row")?.keys().collect();
        have.sort();
        let mut want: Vec<&str> = columns.clone();
        want.sort();
        assert_eq!(have, want, "{path}");
        datasets.insert(
            text(dataset, "uuid")?.to_string(),
            (table.to_string(), columns, metrics),
        );
    }
    assert_eq!(datasets.len(), 4);

    // Charts use their dataset's columns and metrics.
    let mut charts = BTreeMap::new();
    for (path, chart) in of_kind("charts") {
        let (table, columns, metrics) = datasets
            .get(text(chart, "dataset_uuid")?)
            .with_context(|| format!("{path}: unknown dataset"))?;
        let params = &chart["params"];
        assert_eq!(
            params["datasource"].as_str(),
            Some(format!("{table}__table").as_str())
        );
        assert_eq!(params["viz_type"], chart["viz_type"], "{path}");
        let metric_names: Vec<&str> = metrics.iter().map(|(name, _)| *name).collect();
        let mut used_metrics = Vec::new();
        for key in [
            "metric",
            "timeseries_limit_metric",
            "series_limit_metric",
            "x_axis_sort",
        ] {
            used_metrics.extend(params[key].as_str());
        }
        if let Some(list) = params["metrics"].as_sequence() {
            used_metrics.extend(list.iter().filter_map(|m| m.as_str()));
        }
        assert!(!used_metrics.is_empty(), "{path}: no metric");
        for metric in used_metrics {
            assert!(
                metric_names.contains(&metric),
                "{path}: metric {metric} not in {table}"
            );
        }
        let mut used_columns: Vec<&str> = Vec::new();
        for key in ["x_axis", "series"] {
            used_columns.extend(params[key].as_str());
        }
        if let Some(list) = params["groupby"].as_sequence() {
            used_columns.extend(list.iter().filter_map(|c| c.as_str()));
        }
        if let Some(filters) = params["adhoc_filters"].as_sequence() {
            used_columns.extend(filters.iter().filter_map(|f| f["subject"].as_str()));
        }
        for column in used_columns {
            assert!(
                columns.contains(&column),
                "{path}: column {column} not in {table}"
            );
        }
        charts.insert(
            text(chart, "uuid")?.to_string(),
            text(chart, "slice_name")?.to_string(),
        );
    }

    // Dashboards: the seed's three, placing every chart once.
    let mut titles = Vec::new();
    let mut placed = Vec::new();
    for (path, dashboard) in of_kind("dashboards") {
        titles.push(text(dashboard, "dashboard_title")?.to_string());
        for (_, node) in dashboard["position"].as_mapping().context("position")? {
            if node["type"].as_str() == Some("CHART") {
                let uuid = text(&node["meta"], "uuid")?;
                let name = charts
                    .get(uuid)
                    .with_context(|| format!("{path}: unknown chart"))?;
                assert_eq!(node["meta"]["sliceName"].as_str(), Some(name.as_str()));
                placed.push(uuid.to_string());
            }
        }
    }
    titles.sort();
    assert_eq!(
        titles,
        [
            "Real-time trends",
            "Tweet analytics overview",
            "User engagement"
        ]
    );
    placed.sort();
    assert_eq!(
        placed,
        charts.keys().cloned().collect::<Vec<_>>(),
        "each chart once"
    );
    Ok(())
}
