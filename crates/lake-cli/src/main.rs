//! The `lake` binary: parses the command line, loads configuration, starts
//! telemetry and hands over to the library crate that does the work.

mod cli;
mod commands;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

// jemalloc serves Rust's allocations and, unprefixed, librdkafka's and every other C
// allocation too: glibc's per-thread arenas kept ~200 MB of freed decompression buffers
// resident during ingest, which jemalloc's decay-based purging returns.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let loaded = cli
        .overrides()
        .and_then(|overrides| lake_core::Config::load(cli.global.config.as_deref(), &overrides));
    let (config, sources) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logs(&config.telemetry, cli.command.default_log_filter());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let job = cli.command.metrics_job();
    let result = runtime.block_on(async {
        let metrics = telemetry::init_metrics(&config.telemetry, job)?;
        let result = commands::run(cli.command, config, sources).await;
        // Failed runs push too: their rejects and conflicts are what an alert wants.
        metrics.push().await;
        result
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
