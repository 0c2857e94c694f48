//! The command line itself: flag names, the token's variable, exit codes,
//! shell completions, and a catalog that stops answering. These need no
//! services; the reading commands' fallback to ./lake-data is tested in
//! quickstart.rs, where a quickstart makes one.

use anyhow::{Result, ensure};
use lake_testkit::{free_port, run_lake_env};

const NO_ENV: Vec<(String, String)> = Vec::new();

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `lake config show` with these arguments and variables: its stdout.
fn config_show(args: &[&str], env: Vec<(&str, &str)>) -> Result<String> {
    let mut all = args.to_vec();
    all.extend(["config", "show"]);
    let out = run_lake_env(&all, env)?;
    ensure!(out.status.success(), "{all:?}: {}", stderr(&out));
    Ok(stdout(&out))
}

#[test]
fn catalog_uri_is_the_flag_and_catalog_its_hidden_alias() -> Result<()> {
    let shown = config_show(&["--catalog-uri", "http://catalog.example:8181"], vec![])?;
    assert!(
        shown.contains("uri = \"http://catalog.example:8181\""),
        "{shown}"
    );
    assert!(shown.contains("# flags: catalog.uri"), "{shown}");
    let shown = config_show(&["--catalog", "http://old.example:8181"], vec![])?;
    assert!(
        shown.contains("uri = \"http://old.example:8181\""),
        "{shown}"
    );

    let help = stdout(&run_lake_env(&["--help"], NO_ENV)?);
    assert!(help.contains("--catalog-uri <URI>"), "{help}");
    assert!(
        !help.contains("--catalog <"),
        "the alias is hidden:\n{help}"
    );
    Ok(())
}

#[test]
fn groups_per_commit_replaces_partial_progress() -> Result<()> {
    let help = stdout(&run_lake_env(&["compact", "--help"], NO_ENV)?);
    assert!(help.contains("--groups-per-commit <N>"), "{help}");
    assert!(!help.contains("partial-progress"), "{help}");
    // The old name still parses: the command gets as far as the catalog.
    let port = free_port().to_string();
    let uri = format!("http://127.0.0.1:{port}");
    for flag in ["--groups-per-commit", "--partial-progress"] {
        let out = run_lake_env(
            &[
                "--catalog-uri",
                &uri,
                "compact",
                "--all",
                flag,
                "0",
                "--dry-run",
            ],
            NO_ENV,
        )?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{flag}: {err}");
        assert!(err.contains("nothing answers there"), "{flag}: {err}");
    }
    Ok(())
}

/// The token's variable shows in `--help`, its value never; taken from the
/// variable it counts as the environment's, from the flag as a flag's.
#[test]
fn the_token_has_a_variable_that_help_names_and_config_show_attributes() -> Result<()> {
    let secret = "rb_secret_token_value";
    let out = run_lake_env(&["--help"], vec![("LAKE_CATALOG__TOKEN", secret)])?;
    // Help wraps to the terminal's width; words are what count.
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(help.contains("[env: LAKE_CATALOG__TOKEN]"), "{help}");
    assert!(!help.contains(secret), "{help}");

    let shown = config_show(&[], vec![("LAKE_CATALOG__TOKEN", secret)])?;
    assert!(
        shown.contains("# environment: LAKE_CATALOG__TOKEN"),
        "{shown}"
    );
    assert!(!shown.contains("# flags"), "{shown}");
    assert!(!shown.contains(secret), "{shown}");
    let shown = config_show(&["--token", secret], vec![])?;
    assert!(shown.contains("# flags: catalog.token"), "{shown}");
    assert!(!shown.contains(secret), "{shown}");
    Ok(())
}

#[test]
fn exit_codes_tell_usage_from_failure() -> Result<()> {
    let code = |args: &[&str]| -> Result<(Option<i32>, String)> {
        let out = run_lake_env(args, NO_ENV)?;
        Ok((out.status.code(), stderr(&out)))
    };
    // The command line.
    let (status, err) = code(&["tabels"])?;
    assert_eq!(status, Some(2), "{err}");
    let (status, err) = code(&["compact", "--min-input-files", "1", "--all"])?;
    assert_eq!(status, Some(2), "{err}");
    // The configuration.
    let (status, err) = code(&["--catalog-uri", "not a url", "tables"])?;
    assert_eq!(status, Some(2), "{err}");
    assert!(
        err.contains("catalog.uri `not a url` is not a URL"),
        "{err}"
    );
    let (status, err) = code(&["--config", "/nonexistent/lake.toml", "tables"])?;
    assert_eq!(status, Some(2), "{err}");
    let (status, err) = code(&["--pipeline", "/nonexistent/pipeline", "validate"])?;
    assert_eq!(status, Some(2), "{err}");
    // A failure while running: nothing answers where the catalog should be.
    let uri = format!("http://127.0.0.1:{}", free_port());
    let (status, err) = code(&["--catalog-uri", &uri, "tables"])?;
    assert_eq!(status, Some(1), "{err}");
    assert!(err.contains(&uri), "{err}");
    // Success.
    let (status, err) = code(&["config", "show"])?;
    assert_eq!(status, Some(0), "{err}");
    Ok(())
}

#[test]
fn completions_cover_every_command_and_flag() -> Result<()> {
    let out = run_lake_env(&["completions", "bash"], NO_ENV)?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    for word in [
        "--catalog-uri",
        "--groups-per-commit",
        "quickstart",
        "transform",
        "compact",
        "completions",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // The script is valid bash.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("lake.bash");
    std::fs::write(&file, &script)?;
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()?;
    assert!(check.status.success(), "{}", stderr(&check));

    for shell in ["zsh", "fish"] {
        let out = run_lake_env(&["completions", shell], NO_ENV)?;
        ensure!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("groups-per-commit"), "{shell}");
    }
    let out = run_lake_env(&["completions", "tcsh"], NO_ENV)?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A broken lake.toml in the working directory does not stop them.
    let broken = tempfile::tempdir()?;
    std::fs::write(broken.path().join("lake.toml"), "[catalog\n")?;
    let out = lake_testkit::run_lake_in(broken.path(), &["completions", "bash"], NO_ENV)?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

/// Output to a reader that has gone (`lake config show | head -1` once head
/// has exited) ends the command with success and says nothing: no panic, no
/// error about a pipe the user closed on purpose.
#[test]
fn output_into_a_closed_pipe_ends_quietly() -> Result<()> {
    for args in [&["config", "show"][..], &["catalog", "generate-key"]] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let dir = tempfile::tempdir()?;
        let out = std::process::Command::new(lake_testkit::lake_bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("LAKE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()?
            .wait_with_output()?;
        assert_eq!(stderr(&out), "", "lake {args:?}");
        assert!(out.status.success(), "lake {args:?}: {}", out.status);
    }
    Ok(())
}

/// A catalog that answers `/v1/config` and then accepts every request
/// without ever answering, as a wedged server or a half-dead proxy does.
/// Returns its URI; it lives as long as the test process.
fn wedged_catalog() -> Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let uri = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            if request.starts_with("GET /v1/config") {
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = r#"{"defaults":{},"overrides":{}}"#;
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else {
                held.push(reader);
            }
        }
    });
    Ok(uri)
}

#[test]
fn a_catalog_that_stops_answering_fails_the_command_within_its_timeout() -> Result<()> {
    let out = run_lake_env(&["tables"], vec![("LAKE_CATALOG__REQUEST_TIMEOUT", "0s")])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("catalog.request_timeout must be longer than 0s"),
        "{}",
        stderr(&out)
    );

    let uri = wedged_catalog()?;
    let started = std::time::Instant::now();
    let mut lake = lake_testkit::LakeProcess::spawn(
        &["--catalog-uri", &uri, "tables"],
        [("LAKE_CATALOG__REQUEST_TIMEOUT", "2s")],
    )?;
    let status = lake.wait(std::time::Duration::from_secs(60))?;
    let waited = started.elapsed();
    let err = lake.log();
    assert_eq!(status.code(), Some(1), "{err}");
    // The plain cause first, the client library's words after it.
    let first = err
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_default();
    assert_eq!(
        first,
        format!("error: no answer from {uri} in time (to /v1/namespaces)"),
        "{err}"
    );
    assert!(err.contains("timed out"), "{err}");
    // Listing namespaces is the request that goes unanswered; it alone waits.
    assert!(
        waited >= std::time::Duration::from_secs(2) && waited < std::time::Duration::from_secs(20),
        "{waited:?}"
    );
    Ok(())
}
