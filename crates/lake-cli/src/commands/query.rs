//! `lake sql`, `lake tables`, `lake snapshots`, `lake status`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use lake_core::Config;
use lake_core::config::Sources;
use lake_query::{AsOf, Format, Session};

use super::embedded;
use crate::cli::{ListArgs, SnapshotsArgs, SqlArgs};

pub async fn sql(args: SqlArgs, config: Config, sources: &Sources) -> anyhow::Result<ExitCode> {
    let query = if args.query == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the query from standard input")?;
        text
    } else {
        args.query.clone()
    };
    let as_of = args.as_of.as_deref().map(AsOf::parse).transpose()?;
    let (catalog, server) = embedded::connect(config, sources, &args.embedded).await?;
    let session = Session::open(&catalog, as_of).await?;
    let result = session.query(&query).await?;
    lake_query::write_batches(
        &mut std::io::stdout().lock(),
        &result.schema,
        &result.batches,
        args.format.into(),
    )?;
    if args.format == crate::cli::FormatArg::Table {
        let rows = result.rows();
        eprintln!(
            "{rows} row{} in {:.3}s",
            if rows == 1 { "" } else { "s" },
            result.elapsed.as_secs_f64()
        );
    }
    embedded::finish(server).await?;
    Ok(ExitCode::SUCCESS)
}

/// `lake tables` (`lag` false) and `lake status`.
pub async fn list(
    args: ListArgs,
    config: Config,
    sources: &Sources,
    lag: bool,
) -> anyhow::Result<ExitCode> {
    let (catalog, server) = embedded::connect(config, sources, &args.embedded).await?;
    let statuses = lake_query::statuses(&catalog).await?;
    let batch = lake_query::status_batch(&statuses, lake_core::now_micros() / 1000, lag)?;
    write(&batch, args.format.into())?;
    embedded::finish(server).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(
    args: SnapshotsArgs,
    config: Config,
    sources: &Sources,
) -> anyhow::Result<ExitCode> {
    let (catalog, server) = embedded::connect(config, sources, &args.embedded).await?;
    let rows = lake_query::snapshots(&catalog, &args.table).await?;
    write(&lake_query::snapshots_batch(&rows)?, args.format.into())?;
    embedded::finish(server).await?;
    Ok(ExitCode::SUCCESS)
}

fn write(batch: &lake_query::RecordBatch, format: Format) -> anyhow::Result<()> {
    lake_query::write_batches(
        &mut std::io::stdout().lock(),
        &batch.schema(),
        std::slice::from_ref(batch),
        format,
    )?;
    Ok(())
}
