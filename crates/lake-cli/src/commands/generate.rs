use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use lake_core::Config;
use lake_generate::{
    FaultRates, Generator, GeneratorConfig, Records, Replay, Resolved, RunLimits, Source, Stream,
    Summary, Target,
};

use crate::cli::{GenerateArgs, KeyArg};

pub async fn run(args: GenerateArgs, config: Config) -> anyhow::Result<ExitCode> {
    let pipeline = super::pipeline(&config)?;
    let Resolved { source, topic } = lake_generate::resolve(
        &pipeline,
        args.dataset.as_deref(),
        args.from.as_deref(),
        args.topic.as_deref(),
        args.key == KeyArg::User,
    )?;
    let label = args.dataset.clone().unwrap_or_else(|| "records".into());
    let seed = args.seed.unwrap_or_else(rand_seed);
    let replayed = matches!(source, Source::File { .. });
    let mut records: Box<dyn Records + Send> = match source {
        Source::Stream(stream) => Box::new(Generator::new(generator_config(&args, stream, seed)?)),
        Source::File { path, keys } => Box::new(Replay::open(&path, &keys, &label)?),
    };
    let (target, destination) = match args.out.as_deref() {
        Some("-") => (Target::File(None), "stdout".to_string()),
        Some(path) => (Target::File(Some(path.into())), path.to_string()),
        None => {
            let client = lake_kafka::client_config(&config.kafka, &args.property);
            let info = lake_kafka::ensure_topic(
                &client,
                &topic,
                args.partitions,
                args.replication_factor,
                args.connect_timeout,
            )
            .await?;
            let created = if info.created { ", created" } else { "" };
            (
                Target::Kafka {
                    config: client,
                    topic: topic.clone(),
                    keyed: args.key == KeyArg::User,
                },
                format!(
                    "Kafka topic `{topic}` ({} partitions{created})",
                    info.partitions
                ),
            )
        }
    };
    let limits = RunLimits {
        count: args.count,
        duration: args.duration,
        rate: args.rate,
        progress: std::io::stderr().is_terminal(),
        ..RunLimits::default()
    };
    match (config.telemetry.health_addr, &target) {
        (Some(addr), Target::Kafka { .. }) => {
            crate::telemetry::serve_health(addr, limits.status.clone()).await?;
        }
        (Some(_), Target::File(_)) => {
            tracing::warn!("--health-addr is served only while generating into Kafka");
        }
        (None, _) => {}
    }

    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    let watcher = tokio::spawn(async move {
        super::shutdown_signal().await;
        signal_stop.store(true, Ordering::Relaxed);
    });
    let summary = tokio::task::spawn_blocking(move || {
        lake_generate::run(records.as_mut(), &target, &limits, &stop)
    })
    .await
    .context("generator thread")??;
    watcher.abort();

    let name = args.dataset.as_deref().unwrap_or("records");
    if replayed {
        print_replayed(name, &destination, &summary);
    } else {
        print_summary(name, &destination, seed, &summary);
    }
    if summary.failed > 0 {
        bail!(
            "{} records were not delivered: {}",
            summary.failed,
            summary.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The generator's settings from the command line.
fn generator_config(
    args: &GenerateArgs,
    stream: Stream,
    seed: u64,
) -> anyhow::Result<GeneratorConfig> {
    let faults = FaultRates {
        duplicates: args.duplicates,
        malformed: args.malformed,
        late: args.late,
        invalid: args.invalid,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let start_micros = match &args.start {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("--start `{text}` is not an RFC 3339 time"))?
            .as_microsecond(),
        None => jiff::Timestamp::now().as_millisecond() * 1000,
    };
    let mut config = GeneratorConfig::new(stream, seed, start_micros);
    config.events_per_second = args.events_per_second.unwrap_or(if args.rate > 0 {
        f64::from(args.rate)
    } else {
        1000.0
    });
    config.population = args.users;
    config.faults = faults;
    config.late_by = args.late_by;
    Ok(config)
}

fn print_replayed(name: &str, destination: &str, summary: &Summary) {
    eprintln!(
        "replayed {} {name} records in {:.2}s ({:.0}/s, {:.1} MB) to {destination}{}\n  \
         delivered {}, failed {}",
        summary.counts.total,
        summary.elapsed.as_secs_f64(),
        summary.rate(),
        summary.bytes as f64 / 1e6,
        if summary.interrupted {
            " (interrupted)"
        } else {
            ""
        },
        summary.delivered,
        summary.failed,
    );
}

pub(super) fn print_summary(dataset: &str, destination: &str, seed: u64, summary: &Summary) {
    let c = &summary.counts;
    let stopped = if summary.interrupted {
        " (interrupted)"
    } else {
        ""
    };
    eprintln!(
        "generated {} {} in {:.2}s ({:.0}/s, {:.1} MB) to {destination}{stopped}\n  \
         duplicates {}, malformed {}, late {}, invalid {}; delivered {}, failed {}; seed {seed}",
        c.total,
        dataset,
        summary.elapsed.as_secs_f64(),
        summary.rate(),
        summary.bytes as f64 / 1e6,
        c.duplicates,
        c.malformed,
        c.late,
        c.invalid,
        summary.delivered,
        summary.failed,
    );
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
