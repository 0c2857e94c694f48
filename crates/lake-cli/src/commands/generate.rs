use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use lake_core::Config;
use lake_core::datasets::Dataset;
use lake_generate::{FaultRates, Generator, GeneratorConfig, RunLimits, Summary, Target};

use crate::cli::GenerateArgs;

pub async fn run(args: GenerateArgs, config: Config) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::from(args.dataset);
    let faults = FaultRates {
        duplicates: args.duplicates,
        malformed: args.malformed,
        late: args.late,
        invalid: args.invalid,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let seed = args.seed.unwrap_or_else(rand_seed);
    let start_micros = match &args.start {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("--start `{text}` is not an RFC 3339 time"))?
            .as_microsecond(),
        None => jiff::Timestamp::now().as_millisecond() * 1000,
    };
    let mut generator_config = GeneratorConfig::new(dataset, seed, start_micros);
    generator_config.events_per_second = args.events_per_second.unwrap_or(if args.rate > 0 {
        f64::from(args.rate)
    } else {
        1000.0
    });
    generator_config.population = args.users;
    generator_config.faults = faults;
    generator_config.late_by = args.late_by;

    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| dataset.default_topic().to_string());
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
                    keyed: args.key == crate::cli::KeyArg::User,
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
    };

    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    let watcher = tokio::spawn(async move {
        super::shutdown_signal().await;
        signal_stop.store(true, Ordering::Relaxed);
    });
    let summary = tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(generator_config);
        lake_generate::run(&mut generator, &target, &limits, &stop)
    })
    .await
    .context("generator thread")??;
    watcher.abort();

    print_summary(dataset, &destination, seed, &summary);
    if summary.failed > 0 {
        bail!(
            "{} records were not delivered: {}",
            summary.failed,
            summary.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_summary(dataset: Dataset, destination: &str, seed: u64, summary: &Summary) {
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
        dataset.name(),
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
