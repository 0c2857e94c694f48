//! The `lake` binary: parses the command line, loads configuration, starts
//! telemetry and hands over to the library crate that does the work.

mod cli;
mod commands;
mod exit;
mod telemetry;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

// jemalloc serves Rust's allocations and, unprefixed, librdkafka's and every other C
// allocation too: glibc's per-thread arenas kept ~200 MB of freed decompression buffers
// resident during ingest, which jemalloc's decay-based purging returns.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Whether `--token` itself was given (rather than clap taking it from its
/// variable), at whichever level of subcommands it stands.
fn token_on_command_line(matches: &ArgMatches) -> bool {
    let mut level = Some(matches);
    while let Some(matches) = level {
        if matches.value_source("token") == Some(ValueSource::CommandLine) {
            return true;
        }
        level = matches.subcommand().map(|(_, sub)| sub);
    }
    false
}

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let mut cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !token_on_command_line(&matches) {
        // The configuration layer reads the variable itself and reports it as
        // the environment's, not as a flag's.
        cli.global.token = None;
    }
    // Completions need no configuration: a broken lake.toml must not stop them.
    if let cli::Command::Completions(args) = &cli.command {
        return commands::completions(args);
    }
    let loaded = cli
        .overrides()
        .and_then(|overrides| lake_core::Config::load(cli.global.config.as_deref(), &overrides));
    let (config, sources) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
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
        // The reader of the output went away (`lake sql … | head`): it has
        // what it wanted, and the work before the output is done.
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", exit::message(&e));
            exit::for_error(&e)
        }
    }
}
