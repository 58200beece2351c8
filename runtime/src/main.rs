//! The `hartonomous` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hartonomous_loader::atom::{AtomizeOptions, DEFAULT_ATOM_BYTES};

#[derive(Parser)]
#[command(name = "hartonomous", version, about = "Models in the database, run on the GPU.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a model file (safetensors or GGUF) holds and what atomizing it would store.
    Inspect {
        /// The model file; its format is detected from its content.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Target atom size in bytes (rounded down to whole blocks of each dtype).
        #[arg(long, default_value_t = DEFAULT_ATOM_BYTES)]
        atom_bytes: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { file, json, atom_bytes } => {
            let options = AtomizeOptions::new(atom_bytes)?;
            let report = hartonomous_runtime::inspect::inspect(&file, &options)
                .with_context(|| format!("inspecting {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
    }
    Ok(())
}
