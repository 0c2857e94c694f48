use std::io::Write;
use std::process::ExitCode;

use lake_core::Config;
use lake_core::config::Sources;

use crate::cli::ConfigCommand;

pub fn run(command: ConfigCommand, config: &Config, sources: &Sources) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Show => {
            let file = sources
                .file
                .as_ref()
                .map_or("none".to_string(), |f| f.display().to_string());
            let mut out = std::io::stdout().lock();
            writeln!(out, "# file: {file}")?;
            if !sources.env.is_empty() {
                writeln!(out, "# environment: {}", sources.env.join(", "))?;
            }
            if !sources.flags.is_empty() {
                writeln!(out, "# flags: {}", sources.flags.join(", "))?;
            }
            write!(out, "{}", config.to_redacted_toml()?)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
