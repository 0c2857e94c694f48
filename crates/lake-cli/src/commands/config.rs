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
            println!("# file: {file}");
            if !sources.env.is_empty() {
                println!("# environment: {}", sources.env.join(", "));
            }
            if !sources.flags.is_empty() {
                println!("# flags: {}", sources.flags.join(", "));
            }
            print!("{}", config.to_redacted_toml()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
