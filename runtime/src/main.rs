//! The `hartonomous` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use hartonomous_loader::atom::{AtomizeOptions, DEFAULT_ATOM_BYTES};
use hartonomous_runtime::ingest::{ingest, IngestOptions, DEFAULT_GEOMETRY_MAX_POINTS};
use hartonomous_runtime::store::{self, parse_model_ref, ModelRow, Store};

/// Exit status of `verify` when it found damage (1 means the command itself failed).
const EXIT_DAMAGED: u8 = 2;

#[derive(Parser)]
#[command(name = "hartonomous", version, about = "Models in the database, run on the GPU.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the store is. Without `--db`: `$HARTONOMOUS_DATA_DIR/hartonomous.db`, else
/// `$XDG_DATA_HOME/hartonomous/hartonomous.db`, else `~/.local/share/hartonomous/hartonomous.db`.
#[derive(clap::Args)]
struct Db {
    /// The store: a SQLite file path or sqlite:PATH, or SQL Server 2025 as
    /// mssql://user:password@host:port/database or an ADO string (Server=...;Database=...).
    #[arg(long, value_name = "URL")]
    db: Option<String>,
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
    /// Store model files in the database: atoms deduplicated by SHA-256, layers, geometry.
    Ingest {
        /// Model files (safetensors or GGUF).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        db: Db,
        /// Model name (one file only); by default the file's stem, or its folder's name for a
        /// generic `model.safetensors`.
        #[arg(long)]
        name: Option<String>,
        /// Model version.
        #[arg(long, default_value = "1")]
        version: String,
        /// Layers with at most this many elements also get LINESTRING ZM geometry (32 bytes a
        /// point); the default covers vectors (norms, biases), not matrices.
        #[arg(long, default_value_t = DEFAULT_GEOMETRY_MAX_POINTS)]
        geometry_max_points: u64,
        /// Print each summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the stored models.
    Models {
        #[command(flatten)]
        db: Db,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a model: its layers, and the atoms no other model uses.
    Rm {
        /// NAME or NAME:VERSION.
        model: String,
        #[command(flatten)]
        db: Db,
    },
    /// Re-hash every atom and check every layer, model and reference count; exits with
    /// status 2 when it finds damage.
    Verify {
        /// Only this model (NAME or NAME:VERSION), and the atoms it uses.
        model: Option<String>,
        #[command(flatten)]
        db: Db,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message before it
/// already contains (library errors name their cause in their own message as well).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The default store file; `create` makes its folder.
fn default_db(create: bool) -> anyhow::Result<String> {
    let non_empty = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = match (non_empty("HARTONOMOUS_DATA_DIR"), non_empty("XDG_DATA_HOME"), non_empty("HOME")) {
        (Some(dir), _, _) => dir,
        (None, Some(xdg), _) => xdg.join("hartonomous"),
        (None, None, Some(home)) => home.join(".local/share/hartonomous"),
        (None, None, None) => bail!("no store given: pass --db, or set HARTONOMOUS_DATA_DIR or HOME"),
    };
    if create {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating the data folder {}", dir.display()))?;
    }
    Ok(dir.join("hartonomous.db").display().to_string())
}

async fn open_store(db: &Db, create: bool) -> anyhow::Result<Box<dyn Store>> {
    let url = match &db.db {
        Some(url) => url.clone(),
        None => default_db(create)?,
    };
    Ok(if create { store::open(&url).await? } else { store::open_existing(&url).await? })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
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
        Command::Ingest { files, db, name, version, geometry_max_points, json } => {
            if name.is_some() && files.len() > 1 {
                bail!("--name names one model, but {} files were given: ingest them one at a time", files.len());
            }
            let store = open_store(&db, true).await?;
            let options = IngestOptions {
                name,
                version,
                geometry_max_points,
                ..IngestOptions::default()
            };
            for file in &files {
                let report = ingest(store.as_ref(), file, &options)
                    .await
                    .with_context(|| format!("ingesting {}", file.display()))?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", report.to_text());
                }
            }
        }
        Command::Models { db, json } => {
            let store = open_store(&db, false).await?;
            let models = store.list_models().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&models)?);
            } else {
                print!("{}", models_table(&models));
            }
        }
        Command::Rm { model, db } => {
            let store = open_store(&db, false).await?;
            let (name, version) = parse_model_ref(&model);
            let out = store.remove_model(name, version).await?;
            println!(
                "removed {}: {} layers; freed {} atoms ({} bytes); {} atoms kept, still used by other models",
                out.model, out.layers, out.atoms_freed, out.bytes_freed, out.atoms_kept
            );
        }
        Command::Verify { model, db } => {
            let store = open_store(&db, false).await?;
            let scope = match &model {
                Some(text) => {
                    let (name, version) = parse_model_ref(text);
                    let row = store
                        .model(name, version)
                        .await?
                        .with_context(|| format!("no complete model {text} in {}", store.location()))?;
                    Some(row.id)
                }
                None => None,
            };
            let report = store.verify(scope).await?;
            for damage in &report.damage {
                println!("DAMAGE {damage}");
            }
            let what = format!(
                "{} models, {} layers, {} atoms ({} bytes) in {}",
                report.models,
                report.layers,
                report.atoms,
                report.atom_bytes,
                store.location()
            );
            if report.is_clean() {
                println!("verified {what}: clean");
            } else {
                println!("verified {what}: {} problems found", report.damage.len());
                return Ok(ExitCode::from(EXIT_DAMAGED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn models_table(models: &[ModelRow]) -> String {
    if models.is_empty() {
        return "no models stored\n".into();
    }
    let width = models.iter().map(|m| m.label().len()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "{:<width$}  {:<12}  {:<11}  {:>7}  {:>12}  {:>12}  {:<9}  {:<16}  {}\n",
        "model", "architecture", "format", "tensors", "parameters", "atom bytes", "status", "weights root", "created"
    );
    for m in models {
        let root = m.weights_root.map(|r| r.to_hex()[..16].to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<width$}  {:<12}  {:<11}  {:>7}  {:>12}  {:>12}  {:<9}  {:<16}  {}\n",
            m.label(),
            m.architecture,
            m.format,
            m.tensor_count,
            m.parameter_count,
            m.atom_bytes,
            m.status.as_str(),
            root,
            m.created_at
        ));
    }
    out
}
