//! lake-table's commit path against the real catalog on PostgreSQL and
//! s3s-fs, with pyiceberg as the independent reader.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Result;
use iceberg::NamespaceIdent;
use iceberg::table::Table;
use lake_core::config::Role;
use lake_table::files::{appended_between, live_files, summary_lookup};
use lake_table::{Append, Delete, Error, FileSelector, LakeCatalog, Overwrite, Replace};
use lake_testkit::{CatalogProcess, CatalogSpec, Services};
use support::*;

async fn setup(name: &str) -> Result<(CatalogProcess, LakeCatalog, Table)> {
    let services = Services::from_env();
    let process = CatalogProcess::start(CatalogSpec::postgres_s3(&services).await?).await?;
    let catalog = process.lake_catalog(Role::Writer).await?;
    catalog
        .ensure_namespace(&NamespaceIdent::new("bronze".into()))
        .await?;
    let table = create_events_table(catalog.rest(), "bronze", name, HashMap::new()).await?;
    Ok((process, catalog, table))
}

fn summary_value(table: &Table, key: &str) -> String {
    table
        .metadata()
        .current_snapshot()
        .expect("snapshot")
        .summary()
        .additional_properties
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in the summary"))
}

/// append, append with expected parent, replace, overwrite, delete: each
/// snapshot read back by pyiceberg with exactly the rows it should hold, and
/// summaries whose totals match.
#[tokio::test]
async fn every_operation_reads_back_in_pyiceberg() -> Result<()> {
    let (process, catalog, table) = setup("ops").await?;
    let mut expected: Vec<(i64, &str, Vec<Event>)> = Vec::new();

    let a: Vec<Event> = (0..100).map(|id| Event::numbered(id, 4)).collect();
    let table = append(&catalog, &table, &a).await?;
    let s1 = table.metadata().current_snapshot_id().expect("s1");
    expected.push((s1, "append", a.clone()));

    let b: Vec<Event> = (100..200).map(|id| Event::numbered(id, 4)).collect();
    let files = write_events(&table, &b, "b").await?;
    let table = Append::new()
        .add_files(files)
        .set("lake.test.batch", "b")
        .expect_parent(Some(s1))
        .commit(&catalog, &table)
        .await?;
    let s2 = table.metadata().current_snapshot_id().expect("s2");
    let mut rows: Vec<Event> = a.iter().chain(&b).cloned().collect();
    expected.push((s2, "append", rows.clone()));
    assert_eq!(summary_value(&table, "lake.test.batch"), "b");

    // Replace hour 0's two files with one holding the same rows.
    let hour0: Vec<_> = live_files(&table, None)
        .await?
        .into_iter()
        .filter(|f| f.data_file.partition() == &hour(0))
        .collect();
    assert_eq!(hour0.len(), 2, "one file per append in hour 0");
    let hour0_rows: Vec<Event> = rows.iter().filter(|e| hour_of(e) == 0).cloned().collect();
    let rewritten = write_events(&table, &hour0_rows, "compacted").await?;
    assert_eq!(rewritten.len(), 1);
    let table = Replace::new()
        .remove_files(hour0.iter().map(|f| &f.data_file))
        .add_files(rewritten)
        .commit(&catalog, &table)
        .await?;
    let s3 = table.metadata().current_snapshot_id().expect("s3");
    expected.push((s3, "replace", rows.clone()));
    assert_eq!(summary_value(&table, "deleted-data-files"), "2");
    assert_eq!(summary_value(&table, "added-data-files"), "1");
    assert_eq!(summary_value(&table, "total-data-files"), "7");

    // Overwrite hour 1 with ten new rows.
    let fresh: Vec<Event> = (0..10)
        .map(|i| Event {
            id: 1000 + i,
            ts: BASE_TS + HOUR_MICROS + i,
            name: format!("fresh-{i}"),
        })
        .collect();
    let files = write_events(&table, &fresh, "fresh").await?;
    let table = Overwrite::new(FileSelector::partitions([hour(1)]))
        .add_files(files)
        .commit(&catalog, &table)
        .await?;
    let s4 = table.metadata().current_snapshot_id().expect("s4");
    rows.retain(|e| hour_of(e) != 1);
    rows.extend(fresh.iter().cloned());
    expected.push((s4, "overwrite", rows.clone()));

    // Delete hour 2.
    let table = Delete::new(FileSelector::partitions([hour(2)]))
        .commit(&catalog, &table)
        .await?;
    let s5 = table.metadata().current_snapshot_id().expect("s5");
    rows.retain(|e| hour_of(e) != 2);
    expected.push((s5, "delete", rows.clone()));
    assert_eq!(
        summary_value(&table, "total-records"),
        rows.len().to_string()
    );

    // lake's own reader agrees on the current snapshot…
    rows.sort();
    assert_same_rows(&read_events(&table).await?, &rows);

    // …and pyiceberg on every snapshot, with summaries whose totals add up.
    let seen = process.read_with_pyiceberg("bronze.ops", "id")?;
    assert_eq!(seen.current, Some(s5));
    assert_eq!(seen.snapshots.len(), expected.len());
    for (snapshot, operation, rows) in &expected {
        let got = seen.snapshot(*snapshot);
        assert_eq!(
            got.operation.as_deref(),
            Some(*operation),
            "snapshot {snapshot}"
        );
        let values: Vec<i64> = got.values.iter().map(|v| v.as_i64().expect("id")).collect();
        assert_eq!(
            values,
            ids(rows),
            "rows of the {operation} snapshot {snapshot}"
        );
        assert_eq!(got.summary["total-records"], rows.len().to_string());
    }
    Ok(())
}

#[tokio::test]
async fn a_stale_expected_parent_is_refused_and_nothing_commits() -> Result<()> {
    let (_process, catalog, table) = setup("stale").await?;
    let first: Vec<Event> = (0..10).map(|id| Event::numbered(id, 2)).collect();
    let table = append(&catalog, &table, &first).await?;
    let s1 = table.metadata().current_snapshot_id();
    let second: Vec<Event> = (10..20).map(|id| Event::numbered(id, 2)).collect();
    let table = append(&catalog, &table, &second).await?;
    let s2 = table.metadata().current_snapshot_id();

    let zombie_files = write_events(&table, &first, "zombie").await?;
    let refused = Append::new()
        .add_files(zombie_files)
        .expect_parent(s1)
        .commit(&catalog, &table)
        .await;
    match refused {
        Err(Error::Conflict { current, .. }) => {
            assert_eq!(current.metadata().current_snapshot_id(), s2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Expecting an empty table is a precondition too.
    let err = Append::new()
        .expect_parent(None)
        .commit(&catalog, &table)
        .await
        .expect_err("table is not empty");
    assert!(err.is_conflict(), "{err}");

    let now = catalog.load(table.identifier()).await?;
    assert_eq!(now.metadata().current_snapshot_id(), s2);
    assert_eq!(now.metadata().snapshots().count(), 2);
    let mut all = first.clone();
    all.extend(second);
    assert_same_rows(&read_events(&now).await?, &all);
    Ok(())
}

/// A replace that starts from a stale table while another task appends 50
/// times: it rebases, and every appended row is there exactly once.
#[tokio::test]
async fn replace_rebases_over_fifty_concurrent_appends() -> Result<()> {
    let (process, catalog, table) = setup("compacting").await?;
    let mut table = table;
    let mut initial = Vec::new();
    for batch in 0..10 {
        let events: Vec<Event> = (batch * 10..batch * 10 + 10)
            .map(|id| Event::numbered(id, 1))
            .collect();
        table = append(&catalog, &table, &events).await?;
        initial.extend(events);
    }
    // A position key (as ingest records its offsets) set once: every later
    // snapshot, append or replace, must carry it.
    table = Append::new()
        .set("lake.kafka.events", r#"{"0":100}"#)
        .commit(&catalog, &table)
        .await?;
    let inputs = live_files(&table, None).await?;
    assert_eq!(inputs.len(), 10);
    let compacted = write_events(&table, &initial, "compacted").await?;
    let stale = table.clone();

    let appender_catalog = process.lake_catalog(Role::Writer).await?;
    let ident = table.identifier().clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let appender = tokio::spawn(async move {
        let mut started = Some(started_tx);
        for n in 0..50i64 {
            let current = appender_catalog.load(&ident).await?;
            let events: Vec<Event> = (1000 + n * 10..1000 + n * 10 + 10)
                .map(|id| Event::numbered(id, 1))
                .collect();
            append(&appender_catalog, &current, &events).await?;
            if n == 2
                && let Some(tx) = started.take()
            {
                let _ = tx.send(());
            }
        }
        anyhow::Ok(())
    });
    // The replace's base is behind by at least three appends: its first
    // attempt must conflict and rebase.
    started_rx.await?;
    let replaced = Replace::new()
        .remove_files(inputs.iter().map(|f| &f.data_file))
        .add_files(compacted)
        .commit(&catalog, &stale)
        .await?;
    assert_ne!(
        replaced
            .metadata()
            .current_snapshot()
            .expect("s")
            .parent_snapshot_id(),
        stale.metadata().current_snapshot_id(),
        "the replace landed on a newer snapshot than it started from"
    );
    appender.await??;

    let table = catalog.load(table.identifier()).await?;
    let mut expected = initial.clone();
    expected.extend((1000..1500).map(|id| Event::numbered(id, 1)));
    expected.sort();
    assert_same_rows(&read_events(&table).await?, &expected);
    let replaces = table
        .metadata()
        .snapshots()
        .filter(|s| s.summary().operation == iceberg::spec::Operation::Replace)
        .count();
    assert_eq!(replaces, 1);
    assert_eq!(summary_value(&table, "total-records"), "600");
    // 50 appended files + 1 compacted; the 10 inputs are gone.
    let live: BTreeSet<String> = live_files(&table, None)
        .await?
        .into_iter()
        .map(|f| f.path().to_string())
        .collect();
    assert_eq!(live.len(), 51);
    assert!(inputs.iter().all(|f| !live.contains(f.path())));
    assert_eq!(summary_value(&table, "lake.kafka.events"), r#"{"0":100}"#);
    // The ten input files sat in ten manifests; the replace rewrote them as
    // one, and wrote one more for the compacted file.
    let replace = table
        .metadata()
        .snapshots()
        .find(|s| s.summary().operation == iceberg::spec::Operation::Replace)
        .expect("the replace snapshot");
    let written = table
        .manifest_list_reader(replace)
        .load()
        .await?
        .entries()
        .iter()
        .filter(|m| m.added_snapshot_id == replace.snapshot_id())
        .count();
    assert_eq!(written, 2, "manifests the replace wrote");

    // Replacing the same inputs again finds them gone and commits nothing.
    let again = write_events(&table, &initial, "again").await?;
    let before = table.metadata().current_snapshot_id();
    match Replace::new()
        .remove_files(inputs.iter().map(|f| &f.data_file))
        .add_files(again)
        .commit(&catalog, &table)
        .await
    {
        Err(Error::FileNotLive { path, .. }) => {
            assert!(inputs.iter().any(|f| f.path() == path));
        }
        other => panic!("expected FileNotLive, got {other:?}"),
    }
    let after = catalog.load(table.identifier()).await?;
    assert_eq!(after.metadata().current_snapshot_id(), before);
    Ok(())
}

#[tokio::test]
async fn overwrite_of_three_partitions_leaves_seven_untouched() -> Result<()> {
    let (_process, catalog, table) = setup("gold").await?;
    let events: Vec<Event> = (0..200).map(|id| Event::numbered(id, 10)).collect();
    let table = append(&catalog, &table, &events).await?;
    let before = read_events(&table).await?;

    let rebuilt_hours = [2, 5, 7];
    let fresh: Vec<Event> = rebuilt_hours
        .iter()
        .flat_map(|&h| {
            (0..3).map(move |i| Event {
                id: 10_000 + i64::from(h) * 10 + i,
                ts: BASE_TS + i64::from(h) * HOUR_MICROS + 500 + i,
                name: format!("rebuilt-{h}-{i}"),
            })
        })
        .collect();
    let files = write_events(&table, &fresh, "rebuilt").await?;
    let table = Overwrite::new(FileSelector::partitions(rebuilt_hours.map(hour)))
        .add_files(files)
        .commit(&catalog, &table)
        .await?;

    let after = read_events(&table).await?;
    for h in 0..10 {
        let old: Vec<&Event> = before.iter().filter(|e| hour_of(e) == h).collect();
        let new: Vec<&Event> = after.iter().filter(|e| hour_of(e) == h).collect();
        if rebuilt_hours.contains(&h) {
            let want: Vec<&Event> = fresh.iter().filter(|e| hour_of(e) == h).collect();
            assert_eq!(new, want, "hour {h} holds exactly the rebuilt rows");
        } else {
            assert_eq!(new, old, "hour {h} is untouched, row for row");
            assert_eq!(new.len(), 20);
        }
    }
    assert_eq!(summary_value(&table, "deleted-records"), "60");
    assert_eq!(summary_value(&table, "added-records"), "9");

    // An overwrite computed from an older snapshot, after rows landed in a
    // partition it replaces, would drop them: refused.
    let computed_at = table.metadata().current_snapshot_id();
    let late = vec![Event {
        id: 99_999,
        ts: BASE_TS + 2 * HOUR_MICROS + 900,
        name: "late".into(),
    }];
    let table = append(&catalog, &table, &late).await?;
    let files = write_events(&table, &fresh[..3], "stale-rebuild").await?;
    let refused = Overwrite::new(FileSelector::partitions([hour(2)]))
        .add_files(files)
        .validate_from(computed_at)
        .commit(&catalog, &table)
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    // An append into a partition it does not replace is fine.
    let files = write_events(&table, &fresh[3..6], "fine-rebuild").await?;
    Overwrite::new(FileSelector::partitions([hour(5)]))
        .add_files(files)
        .validate_from(computed_at)
        .commit(&catalog, &table)
        .await?;
    Ok(())
}

#[tokio::test]
async fn appended_between_returns_exactly_the_appends_in_range() -> Result<()> {
    let (_process, catalog, mut table) = setup("incremental").await?;
    let mut snapshots = Vec::new();
    let mut files_of = HashMap::new();
    for n in 0..5i64 {
        let events: Vec<Event> = (n * 10..n * 10 + 10)
            .map(|id| Event::numbered(id, 3))
            .collect();
        let files = write_events(&table, &events, &format!("a{n}")).await?;
        let paths: BTreeSet<String> = files.iter().map(|f| f.file_path().to_string()).collect();
        table = Append::new()
            .add_files(files)
            .commit(&catalog, &table)
            .await?;
        let id = table.metadata().current_snapshot_id().expect("snapshot");
        snapshots.push(id);
        files_of.insert(id, paths);
    }
    // A compaction in between adds files but no rows: skipped.
    let live = live_files(&table, None).await?;
    let all: Vec<Event> = (0..50).map(|id| Event::numbered(id, 3)).collect();
    let compacted = write_events(&table, &all, "compacted").await?;
    table = Replace::new()
        .remove_files(live.iter().map(|f| &f.data_file))
        .add_files(compacted)
        .commit(&catalog, &table)
        .await?;
    let events: Vec<Event> = (50..60).map(|id| Event::numbered(id, 3)).collect();
    let files = write_events(&table, &events, "last").await?;
    let last_paths: BTreeSet<String> = files.iter().map(|f| f.file_path().to_string()).collect();
    table = Append::new()
        .add_files(files)
        .commit(&catalog, &table)
        .await?;
    let last = table.metadata().current_snapshot_id().expect("last");

    let paths = |files: Vec<lake_table::files::LiveFile>| -> BTreeSet<String> {
        files.into_iter().map(|f| f.path().to_string()).collect()
    };
    let got = paths(appended_between(&table, Some(snapshots[1]), last).await?);
    let mut want = BTreeSet::new();
    for id in &snapshots[2..] {
        want.extend(files_of[id].iter().cloned());
    }
    want.extend(last_paths.iter().cloned());
    assert_eq!(got, want);

    let got = paths(appended_between(&table, None, snapshots[1]).await?);
    let want: BTreeSet<String> = files_of[&snapshots[0]]
        .union(&files_of[&snapshots[1]])
        .cloned()
        .collect();
    assert_eq!(got, want);
    assert!(appended_between(&table, Some(last), last).await?.is_empty());
    // `from` must be an ancestor of `to`.
    assert!(
        appended_between(&table, Some(last), snapshots[0])
            .await
            .is_err()
    );

    // Summary lookup walks back to the newest snapshot carrying the key.
    assert_eq!(
        summary_lookup(&table, "added-records").map(|(id, _)| id),
        Some(last)
    );
    assert_eq!(summary_lookup(&table, "lake.nothing"), None);
    Ok(())
}

/// Two tables in one catalog transaction: when one table's requirement fails,
/// neither changes; the retry then commits both once.
#[tokio::test]
async fn multi_table_commit_is_all_or_nothing() -> Result<()> {
    let (process, catalog, data) = setup("data").await?;
    let rejects =
        create_events_table(catalog.rest(), "bronze", "data_rejects", HashMap::new()).await?;

    // Raw transaction: a property change on `data`, and a requirement on
    // `data_rejects` that fails. The catalog must refuse both.
    let body = serde_json::json!({
        "table-changes": [
            {
                "identifier": {"namespace": ["bronze"], "name": "data"},
                "requirements": [],
                "updates": [{"action": "set-properties", "updates": {"lake.touched": "yes"}}]
            },
            {
                "identifier": {"namespace": ["bronze"], "name": "data_rejects"},
                "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 42}],
                "updates": [{"action": "set-properties", "updates": {"lake.touched": "yes"}}]
            }
        ]
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/transactions/commit", process.uri()))
        .bearer_auth(&process.keys().writer)
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), reqwest::StatusCode::CONFLICT);
    let data_now = catalog.load(data.identifier()).await?;
    assert!(
        !data_now
            .metadata()
            .properties()
            .contains_key("lake.touched")
    );

    // Through lake-table: `rejects` is stale (someone appended), so the
    // first attempt fails on the server; the retry commits both, once each.
    let other = process.lake_catalog(Role::Writer).await?;
    let someone: Vec<Event> = (500..505).map(|id| Event::numbered(id, 1)).collect();
    append(&other, &rejects, &someone).await?;

    let good: Vec<Event> = (0..20).map(|id| Event::numbered(id, 2)).collect();
    let bad: Vec<Event> = (20..23).map(|id| Event::numbered(id, 2)).collect();
    let good_files = write_events(&data, &good, "good").await?;
    let bad_files = write_events(&rejects, &bad, "bad").await?;
    let tables = lake_table::commit_all(
        &catalog,
        vec![
            (
                data.clone(),
                Append::new()
                    .add_files(good_files)
                    .set("lake.kafka.t", "{\"0\":20}")
                    .into(),
            ),
            (rejects.clone(), Append::new().add_files(bad_files).into()),
        ],
    )
    .await?;
    assert_eq!(tables[0].metadata().snapshots().count(), 1);
    assert_eq!(tables[1].metadata().snapshots().count(), 2);
    assert_same_rows(&read_events(&tables[0]).await?, &good);
    let mut rejected = someone.clone();
    rejected.extend(bad.iter().cloned());
    rejected.sort();
    assert_same_rows(&read_events(&tables[1]).await?, &rejected);
    assert_eq!(
        summary_lookup(&tables[0], "lake.kafka.t").map(|(_, v)| v),
        Some("{\"0\":20}".to_string())
    );

    // A precondition that fails locally stops the whole transaction too.
    let more = write_events(&tables[0], &good[..2], "more").await?;
    let err = lake_table::commit_all(
        &catalog,
        vec![
            (tables[0].clone(), Append::new().add_files(more).into()),
            (tables[1].clone(), Append::new().expect_parent(None).into()),
        ],
    )
    .await
    .expect_err("rejects is not empty");
    assert!(err.is_conflict());
    let unchanged: HashSet<i64> = catalog
        .load(tables[0].identifier())
        .await?
        .metadata()
        .snapshots()
        .map(|s| s.snapshot_id())
        .collect();
    assert_eq!(unchanged.len(), 1);
    Ok(())
}

/// Everything a live snapshot needs is stored under the table's location,
/// and a file nothing references shows up in the listing but not in the
/// reachable set.
#[tokio::test]
async fn reachable_files_are_all_stored_and_orphans_are_not_reachable() -> Result<()> {
    let (process, catalog, mut table) = setup("reach").await?;
    for n in 0..3i64 {
        let events: Vec<Event> = (n * 10..n * 10 + 10)
            .map(|id| Event::numbered(id, 2))
            .collect();
        table = append(&catalog, &table, &events).await?;
    }
    let live = live_files(&table, None).await?;
    let hour0: Vec<_> = live
        .iter()
        .filter(|f| f.data_file.partition() == &hour(0))
        .collect();
    let rows: Vec<Event> = (0..30)
        .map(|id| Event::numbered(id, 2))
        .filter(|e| hour_of(e) == 0)
        .collect();
    let compacted = write_events(&table, &rows, "compacted").await?;
    table = Replace::new()
        .remove_files(hour0.iter().map(|f| &f.data_file))
        .add_files(compacted)
        .commit(&catalog, &table)
        .await?;
    table = Delete::new(FileSelector::partitions([hour(1)]))
        .commit(&catalog, &table)
        .await?;

    let reachable = lake_table::files::reachable_files(&table).await?;
    assert_eq!(reachable.manifest_lists.len(), 5, "one per snapshot");
    assert!(reachable.metadata.len() >= 6, "create + five commits");
    // Live in some snapshot: every file ever appended or compacted (6 + 1).
    let mut ever_live = BTreeSet::new();
    for snapshot in table.metadata().snapshots() {
        for file in live_files(&table, Some(snapshot.snapshot_id())).await? {
            ever_live.insert(file.path().to_string());
        }
    }
    assert_eq!(ever_live.len(), 7);
    assert_eq!(reachable.data_files, ever_live);

    let storage = process.spec().storage.clone();
    let location = table.metadata().location().to_string();
    let orphan = format!("{location}/data/orphan-planted.parquet");
    table
        .file_io()
        .new_output(&orphan)?
        .write("not data".into())
        .await?;
    let stored = lake_table::files::list_location(&storage, &location).await?;
    let stored_paths: BTreeSet<&str> = stored.iter().map(|f| f.location.as_str()).collect();
    for path in reachable
        .metadata
        .iter()
        .chain(&reachable.manifest_lists)
        .chain(&reachable.manifests)
        .chain(&reachable.data_files)
    {
        assert!(stored_paths.contains(path.as_str()), "{path} not stored");
    }
    assert!(stored_paths.contains(orphan.as_str()));
    assert!(!reachable.contains(&orphan));
    let planted = stored
        .iter()
        .find(|f| f.location == orphan)
        .expect("orphan");
    assert_eq!(planted.size, 8);
    assert!(planted.last_modified_ms.is_some());
    Ok(())
}
