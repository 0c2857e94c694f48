//! `lake init`: the shipped datasets written out, to copy and change.

use std::process::ExitCode;

use crate::cli::{ExampleArg, InitArgs};

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = match args.example {
        ExampleArg::All => Vec::new(),
        ExampleArg::Tweets => vec!["tweets".into()],
        ExampleArg::Speedtest => vec!["speedtest".into()],
    };
    let written = lake_spec::write_examples(&args.dir, &names, args.force)?;
    for path in &written {
        eprintln!("wrote {}", path.display());
    }
    let dir = args.dir.display();
    eprintln!(
        "\nThe pipeline in {dir} is what lake runs without one. To declare your own topic, copy \
         a dataset folder and change it (docs/datasets.md), then:\n  \
         lake --pipeline {dir} validate\n  \
         lake --pipeline {dir} ingest <dataset>\n  \
         lake --pipeline {dir} transform all"
    );
    Ok(ExitCode::SUCCESS)
}
