//! `palisade lint FILE|DIR|-`: the admission analysis over manifests, for CI.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use palisade_webhook::lint::{self, Source};

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Files, directories (walked for .yaml, .yml and .json) or `-` for stdin (e.g. `helm template … | palisade lint -`).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Exit 1 when there are warnings (errors always exit 2).
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Human,
    Json,
    Sarif,
}

/// Prints the report and returns the exit code: 0 clean, 1 warnings with `--strict`, 2 errors.
pub fn run(args: LintArgs) -> anyhow::Result<i32> {
    let mut sources = Vec::new();
    let files: Vec<PathBuf> = args.paths.iter().filter(|path| path.as_os_str() != "-").cloned().collect();
    if files.len() < args.paths.len() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|error| anyhow::anyhow!("reading stdin: {error}"))?;
        sources.push(Source { name: "-".into(), text });
    }
    sources.extend(lint::sources(&files)?);
    let report = lint::lint(&sources);
    let text = match args.format {
        Format::Human => report.human(),
        Format::Json => report.json() + "\n",
        Format::Sarif => report.sarif() + "\n",
    };
    print!("{text}");
    Ok(report.exit_code(args.strict))
}
