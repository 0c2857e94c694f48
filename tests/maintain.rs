//! `lake maintain` as a process against the catalog on PostgreSQL + s3s-fs:
//! snapshot expiry with file deletion (pyiceberg reads what is kept), orphan
//! removal, retention, and the daily policy.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use iceberg::NamespaceIdent;
use iceberg::table::Table;
use lake_core::config::Role;
use lake_table::files::{list_location, live_files, reachable_files, reachable_from};
use lake_table::{Delete, FileSelector, LakeCatalog, Overwrite, Replace};
use lake_testkit::{CatalogProcess, CatalogSpec, Services, run_lake_env};
use support::*;

async fn start(namespaces: &[&str]) -> Result<(CatalogProcess, LakeCatalog)> {
    let services = Services::from_env();
    let process = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let catalog = process.lake_catalog(Role::Writer).await?;
    for namespace in namespaces {
        catalog
            .ensure_namespace(&NamespaceIdent::new(namespace.to_string()))
            .await?;
    }
    Ok((process, catalog))
}

/// Runs `lake args…`; its stderr, and whether it succeeded.
fn lake(process: &CatalogProcess, args: &[&str]) -> Result<(bool, String)> {
    let out = run_lake_env(args, process.lake_env(Role::Writer))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

fn lake_ok(process: &CatalogProcess, args: &[&str]) -> Result<String> {
    let (ok, stderr) = lake(process, args)?;
    ensure!(ok, "lake {args:?} failed:\n{stderr}");
    Ok(stderr)
}

async fn exists(table: &Table, path: &str) -> Result<bool> {
    Ok(table.file_io().exists(path).await?)
}

/// Six snapshots (append, append, replace, overwrite, delete, append); the
/// last three are kept. pyiceberg reads each kept one fully; every file they
/// reach is still stored; every file only the first three reached is gone.
#[tokio::test]
async fn expiry_deletes_exactly_what_no_kept_snapshot_reaches() -> Result<()> {
    let (process, catalog) = start(&["bronze"]).await?;
    let mut table = create_events_table(catalog.rest(), "bronze", "hist", HashMap::new()).await?;
    let mut expected: Vec<(i64, Vec<Event>)> = Vec::new();
    let mut rows: Vec<Event> = Vec::new();
    let snap = |table: &Table, rows: &[Event], expected: &mut Vec<(i64, Vec<Event>)>| {
        expected.push((
            table.metadata().current_snapshot_id().unwrap(),
            rows.to_vec(),
        ));
    };

    for batch in 0..2 {
        let events: Vec<Event> = (batch * 100..batch * 100 + 100)
            .map(|id| Event::numbered(id, 4))
            .collect();
        table = append(&catalog, &table, &events).await?;
        rows.extend(events);
        snap(&table, &rows, &mut expected);
    }
    let hour0: Vec<_> = live_files(&table, None)
        .await?
        .into_iter()
        .filter(|f| f.data_file.partition() == &hour(0))
        .collect();
    let hour0_rows: Vec<Event> = rows.iter().filter(|e| hour_of(e) == 0).cloned().collect();
    let compacted = write_events(&table, &hour0_rows, "compacted").await?;
    table = Replace::new()
        .remove_files(hour0.iter().map(|f| &f.data_file))
        .add_files(compacted)
        .commit(&catalog, &table)
        .await?;
    snap(&table, &rows, &mut expected);
    let fresh: Vec<Event> = (0..10)
        .map(|i| Event {
            id: 1000 + i,
            ts: BASE_TS + HOUR_MICROS + i,
            name: format!("fresh-{i}"),
        })
        .collect();
    let files = write_events(&table, &fresh, "fresh").await?;
    table = Overwrite::new(FileSelector::partitions([hour(1)]))
        .add_files(files)
        .commit(&catalog, &table)
        .await?;
    rows.retain(|e| hour_of(e) != 1);
    rows.extend(fresh);
    snap(&table, &rows, &mut expected);
    table = Delete::new(FileSelector::partitions([hour(2)]))
        .commit(&catalog, &table)
        .await?;
    rows.retain(|e| hour_of(e) != 2);
    snap(&table, &rows, &mut expected);
    let last: Vec<Event> = (2000..2050).map(|id| Event::numbered(id, 4)).collect();
    table = append(&catalog, &table, &last).await?;
    rows.extend(last);
    snap(&table, &rows, &mut expected);
    assert_eq!(expected.len(), 6);

    // A transform that consumed the second snapshot keeps it and all later
    // ones; the plan shows it without committing anything.
    let positions = HashSet::from([expected[1].0]);
    let (planned, kept) = lake_maintain::expire::plan(&table, i64::MAX, 3, &positions);
    assert_eq!(planned, vec![expected[0].0]);
    assert_eq!(kept, 2, "the second and third, kept for the position");

    let kept_ids: HashSet<i64> = expected[3..].iter().map(|(id, _)| *id).collect();
    let before = reachable_files(&table).await?;
    let needed = reachable_from(&table, |id| kept_ids.contains(&id)).await?;
    let doomed: BTreeSet<&String> = before
        .manifest_lists
        .difference(&needed.manifest_lists)
        .chain(before.manifests.difference(&needed.manifests))
        .chain(before.data_files.difference(&needed.data_files))
        .collect();
    // Three manifest lists; hour 0's two files (replaced) and hour 1's
    // (overwritten), the manifests that listed them as live.
    assert_eq!(
        before.data_files.difference(&needed.data_files).count(),
        2 + 2,
        "data files only expired snapshots reach"
    );
    assert_eq!(
        before
            .manifest_lists
            .difference(&needed.manifest_lists)
            .count(),
        3
    );

    let dry = lake_ok(
        &process,
        &[
            "maintain",
            "expire-snapshots",
            "bronze.hist",
            "--older-than",
            "0s",
            "--retain-last",
            "3",
            "--dry-run",
        ],
    )?;
    ensure!(dry.contains("would expire 3 of 6 snapshots"), "{dry}");
    for path in &doomed {
        ensure!(
            dry.contains(path.as_str()),
            "dry run does not list {path}:\n{dry}"
        );
        assert!(exists(&table, path).await?, "dry run deleted {path}");
    }

    let out = lake_ok(
        &process,
        &[
            "maintain",
            "expire-snapshots",
            "bronze.hist",
            "--older-than",
            "0s",
            "--retain-last",
            "3",
        ],
    )?;
    ensure!(out.contains("expired 3 of 6 snapshots"), "{out}");
    for path in &doomed {
        assert!(!exists(&table, path).await?, "{path} still stored");
    }
    for path in needed
        .manifest_lists
        .iter()
        .chain(&needed.manifests)
        .chain(&needed.data_files)
    {
        assert!(exists(&table, path).await?, "{path} was needed and deleted");
    }

    let seen = process.read_with_pyiceberg("bronze.hist", "id")?;
    assert_eq!(seen.snapshots.len(), 3);
    for (snapshot, rows) in &expected[3..] {
        let values: Vec<i64> = seen
            .snapshot(*snapshot)
            .values
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(values, ids(rows), "rows of kept snapshot {snapshot}");
    }

    // Nothing left to expire: a second run removes and deletes nothing.
    let again = lake_ok(
        &process,
        &[
            "maintain",
            "expire-snapshots",
            "bronze.hist",
            "--older-than",
            "0s",
            "--retain-last",
            "3",
        ],
    )?;
    ensure!(again.contains("expired 0 of 3 snapshots"), "{again}");
    Ok(())
}

/// Planted unreferenced files: those older than the threshold go, younger
/// ones and every referenced file stay.
#[tokio::test]
async fn orphan_removal_deletes_exactly_the_old_unreferenced_files() -> Result<()> {
    let (process, catalog) = start(&["bronze"]).await?;
    let mut table = create_events_table(catalog.rest(), "bronze", "orph", HashMap::new()).await?;
    for batch in 0..2 {
        let events: Vec<Event> = (batch * 50..batch * 50 + 50)
            .map(|id| Event::numbered(id, 3))
            .collect();
        table = append(&catalog, &table, &events).await?;
    }
    let location = table.metadata().location().to_string();
    let plant = |name: &str| format!("{location}/{name}");
    let old = [
        plant("data/orphan-old-1.parquet"),
        plant("data/ts_hour=2026-01-01-00/orphan-old-2.parquet"),
        plant("metadata/orphan-old-3.avro"),
    ];
    for path in &old {
        table
            .file_io()
            .new_output(path)?
            .write("old".into())
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let young = [
        plant("data/orphan-young.parquet"),
        plant("metadata/orphan-young.avro"),
    ];
    for path in &young {
        table
            .file_io()
            .new_output(path)?
            .write("young".into())
            .await?;
    }
    let storage = process.spec().storage.clone();
    let stored_before: BTreeSet<String> = list_location(&storage, &location)
        .await?
        .into_iter()
        .map(|f| f.location)
        .collect();

    let (ok, refused) = lake(
        &process,
        &[
            "maintain",
            "remove-orphan-files",
            "bronze.orph",
            "--older-than",
            "3s",
        ],
    )?;
    assert!(!ok, "a threshold under an hour must be refused");
    ensure!(refused.contains("--force"), "{refused}");

    let dry = lake_ok(
        &process,
        &[
            "maintain",
            "remove-orphan-files",
            "bronze.orph",
            "--older-than",
            "3s",
            "--force",
            "--dry-run",
        ],
    )?;
    ensure!(dry.contains("3 orphans"), "{dry}");
    let out = lake_ok(
        &process,
        &[
            "maintain",
            "remove-orphan-files",
            "bronze.orph",
            "--older-than",
            "3s",
            "--force",
        ],
    )?;
    ensure!(
        out.contains("3 orphans") && out.contains("2 unreferenced but too young"),
        "{out}"
    );

    let stored_after: BTreeSet<String> = list_location(&storage, &location)
        .await?
        .into_iter()
        .map(|f| f.location)
        .collect();
    let removed: BTreeSet<String> = stored_before.difference(&stored_after).cloned().collect();
    assert_eq!(removed, old.iter().cloned().collect::<BTreeSet<_>>());
    assert!(young.iter().all(|p| stored_after.contains(p)));
    let reachable = reachable_files(&table).await?;
    assert!(
        reachable
            .manifest_lists
            .iter()
            .chain(&reachable.manifests)
            .chain(&reachable.data_files)
            .all(|p| stored_after.contains(p))
    );
    assert_eq!(read_events(&table).await?.len(), 100);
    Ok(())
}

/// Events at 40, 31, 29 days and one hour ago: bronze's default 30 days
/// drops the first two partitions; a table set to 2 days drops three.
#[tokio::test]
async fn retention_drops_exactly_the_partitions_older_than_the_cutoff() -> Result<()> {
    let (process, catalog) = start(&["bronze", "scratch"]).await?;
    let now = lake_core::now_micros();
    let day = 24 * HOUR_MICROS;
    let ages = [40 * day, 31 * day, 29 * day, HOUR_MICROS];
    let events: Vec<Event> = ages
        .iter()
        .enumerate()
        .flat_map(|(n, age)| {
            (0..25).map(move |i| Event {
                id: n as i64 * 100 + i,
                // Mid-hour, so the partition's whole range is at that age.
                ts: (now - age) / HOUR_MICROS * HOUR_MICROS - HOUR_MICROS / 2 + i,
                name: format!("age-{n}"),
            })
        })
        .collect();
    let bronze = create_events_table(catalog.rest(), "bronze", "events", HashMap::new()).await?;
    let bronze = append(&catalog, &bronze, &events).await?;
    let short = create_events_table(
        catalog.rest(),
        "scratch",
        "events",
        HashMap::from([("lake.retention".to_string(), "2d".to_string())]),
    )
    .await?;
    let short = append(&catalog, &short, &events).await?;

    let dry = lake_ok(&process, &["maintain", "retention", "--all", "--dry-run"])?;
    ensure!(
        dry.contains("bronze.events: retention 30days: would drop 2 partitions"),
        "{dry}"
    );
    ensure!(
        dry.contains("scratch.events: retention 2days: would drop 3 partitions"),
        "{dry}"
    );
    assert_eq!(
        catalog
            .load(bronze.identifier())
            .await?
            .metadata()
            .current_snapshot_id(),
        bronze.metadata().current_snapshot_id()
    );

    let out = lake_ok(
        &process,
        &["maintain", "retention", "bronze.events", "scratch.events"],
    )?;
    ensure!(
        out.contains("dropped 2 partitions, 2 files, 50 rows"),
        "{out}"
    );
    ensure!(
        out.contains("dropped 3 partitions, 3 files, 75 rows"),
        "{out}"
    );
    let names =
        |rows: Vec<Event>| -> BTreeSet<String> { rows.into_iter().map(|e| e.name).collect() };
    let bronze = catalog.load(bronze.identifier()).await?;
    assert_eq!(
        names(read_events(&bronze).await?),
        BTreeSet::from(["age-2".to_string(), "age-3".to_string()])
    );
    assert_eq!(read_events(&bronze).await?.len(), 50);
    let short = catalog.load(short.identifier()).await?;
    assert_eq!(
        names(read_events(&short).await?),
        BTreeSet::from(["age-3".to_string()])
    );
    assert_eq!(
        short
            .metadata()
            .current_snapshot()
            .unwrap()
            .summary()
            .operation,
        iceberg::spec::Operation::Delete
    );

    // The daily policy runs on both tables and finds nothing more to drop.
    let all = lake_ok(&process, &["maintain", "all"])?;
    ensure!(
        all.contains("bronze.events: retention 30days: dropped 0 partitions"),
        "{all}"
    );
    ensure!(
        all.contains("scratch.events: retention 2days: dropped 0 partitions"),
        "{all}"
    );
    ensure!(
        all.contains("scratch.events: expired 0 of 2 snapshots"),
        "{all}"
    );
    Ok(())
}

/// `lake compact --where` touches only the files the filter can match,
/// `--groups-per-commit 0` commits them in one snapshot, `--sort-by` orders
/// each new file; then `--partial-progress 1` (the option's former name, kept
/// as an alias) commits group by group.
#[tokio::test]
async fn compact_filters_sorts_and_commits_by_progress() -> Result<()> {
    let (process, catalog) = start(&["bronze"]).await?;
    let mut table = create_events_table(catalog.rest(), "bronze", "small", HashMap::new()).await?;
    let mut rows = Vec::new();
    for batch in 0..5i64 {
        // Names descending within each append, so that only a sort orders them.
        let events: Vec<Event> = (0..40i64)
            .map(|i| {
                let id = batch * 40 + i;
                Event {
                    id,
                    ts: BASE_TS + (i % 4) * HOUR_MICROS + id,
                    name: format!("n-{:04}", 9999 - id),
                }
            })
            .collect();
        table = append(&catalog, &table, &events).await?;
        rows.extend(events);
    }
    rows.sort();
    let per_hour = |files: &[lake_table::files::LiveFile]| -> Vec<usize> {
        (0..4)
            .map(|h| {
                files
                    .iter()
                    .filter(|f| f.data_file.partition() == &hour(h))
                    .count()
            })
            .collect()
    };
    assert_eq!(per_hour(&live_files(&table, None).await?), vec![5, 5, 5, 5]);

    let out = lake_ok(
        &process,
        &[
            "compact",
            "bronze.small",
            "--where",
            "ts < '2026-01-01T02:00:00Z'",
            "--min-input-files",
            "2",
            "--sort-by",
            "name",
            "--groups-per-commit",
            "0",
        ],
    )?;
    ensure!(out.contains("2 groups committed"), "{out}");
    let table = catalog.load(table.identifier()).await?;
    let live = live_files(&table, None).await?;
    assert_eq!(per_hour(&live), vec![1, 1, 5, 5]);
    let replaces = |t: &Table| {
        t.metadata()
            .snapshots()
            .filter(|s| s.summary().operation == iceberg::spec::Operation::Replace)
            .count()
    };
    assert_eq!(replaces(&table), 1, "one commit for both groups");
    assert_same_rows(&read_events(&table).await?, &rows);
    let schema = table.metadata().current_schema().clone();
    let name_id = schema.field_by_name("name").unwrap().id;
    for file in live.iter().filter(|f| f.data_file.partition() == &hour(0)) {
        let task = lake_table::read::scan_task(file, &schema, &[name_id]);
        let batches: Vec<arrow_array::RecordBatch> = futures::TryStreamExt::try_collect(
            lake_table::read::read_tasks(table.file_io().clone(), vec![task], 1),
        )
        .await?;
        let names: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let column = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap();
                column
                    .iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(names.len(), 50);
        assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted by name");
    }

    let out = lake_ok(
        &process,
        &[
            "compact",
            "bronze.small",
            "--min-input-files",
            "2",
            "--partial-progress",
            "1",
        ],
    )?;
    ensure!(out.contains("2 groups committed"), "{out}");
    let table = catalog.load(table.identifier()).await?;
    assert_eq!(per_hour(&live_files(&table, None).await?), vec![1, 1, 1, 1]);
    assert_eq!(replaces(&table), 3, "one more commit per group");
    assert_same_rows(&read_events(&table).await?, &rows);

    let (ok, err) = lake(
        &process,
        &["compact", "bronze.small", "--where", "nope = 1"],
    )?;
    assert!(!ok);
    ensure!(err.contains("no column `nope`"), "{err}");
    Ok(())
}
