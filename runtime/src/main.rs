//! The `hartonomous` command line.

#[path = "cli/access.rs"]
mod access;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use hartonomous_loader::atom::{AtomizeOptions, DEFAULT_ATOM_BYTES};
use hartonomous_runtime::ingest::{ingest, IngestOptions, DEFAULT_GEOMETRY_MAX_POINTS};
use hartonomous_runtime::serve;
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
    #[arg(long, value_name = "URL", global = true)]
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
    /// Make a new model from a stored one without copying its weights: a subset of its blocks,
    /// or its block matrices pruned by importance. It reuses the parent's atoms and records
    /// the parent as its lineage.
    #[command(group(clap::ArgGroup::new("derivation").required(true).args(["layers", "prune_importance"])))]
    Student {
        /// The parent model, NAME or NAME:VERSION.
        #[arg(long = "from", value_name = "MODEL")]
        parent: String,
        /// The new model, NAME or NAME:VERSION (version 1 by default).
        #[arg(long, value_name = "NEW")]
        name: String,
        /// Keep the blocks FIRST-LAST (renumbered from 0) and every tensor outside the blocks.
        #[arg(long, value_name = "FIRST-LAST")]
        layers: Option<hartonomous_runtime::student::BlockRange>,
        /// Zero the weights of every block matrix whose importance |w|/max|w| is below this
        /// quantile of the tensor (0 < Q < 1); only the chunks that change get new atoms.
        #[arg(long, value_name = "Q")]
        prune_importance: Option<f64>,
        #[command(flatten)]
        db: Db,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the stored embedding models over HTTPS (OpenAI-compatible /v1/embeddings), with
    /// lineage written back to the store.
    Serve {
        #[command(flatten)]
        db: Db,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// PEM certificate (with --tls-key); without both, a self-signed certificate for this
        /// host is generated into the data folder on first start and reused.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Plain HTTP on a loopback address, for development only (SQL Server calls HTTPS only).
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        insecure_http: bool,
        /// GPU memory budget for resident weights, in bytes (suffixes K, M, G accepted); by
        /// default half the adapter's largest buffer, and on a software adapter at most a
        /// quarter of RAM.
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        gpu_memory: Option<u64>,
        /// Models to serve, comma-separated NAME[:VERSION]; by default every stored embedding
        /// (BERT-family) and generation (Llama-family) model.
        #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
        models: Vec<String>,
        /// Read weights from their TensorAtoms, or from their LINESTRING ZM geometry wherever a
        /// layer has one.
        #[arg(long, value_enum, default_value = "atoms")]
        weights_source: hartonomous_runtime::pager::WeightsSource,
        /// Write lineage off the response path (async) or before responding (sync).
        #[arg(long, value_enum, default_value = "async")]
        lineage: serve::LineageMode,
        /// Padded tokens (inputs × longest input) per forward pass.
        #[arg(long, default_value_t = serve::ServeOptions::DEFAULT_MAX_BATCH_TOKENS)]
        max_batch_tokens: usize,
        /// Requests waiting for the GPU before new ones are answered 503 with Retry-After.
        #[arg(long, default_value_t = serve::ServeOptions::DEFAULT_QUEUE_CAPACITY)]
        queue: usize,
        /// Sequences a generation model decodes at once; each holds a KV cache of `--context`
        /// tokens, so GPU memory for caches is sequences × context × (2 · layers · kv_dim · 4) bytes.
        #[arg(long, default_value_t = serve::ServeOptions::DEFAULT_MAX_SEQUENCES)]
        max_sequences: usize,
        /// Tokens per generated sequence, prompt and completion (clipped to the model's context).
        #[arg(long, default_value_t = serve::ServeOptions::DEFAULT_CONTEXT)]
        context: usize,
        /// How `/v1/search` holds stored embeddings on the GPU: f32 (exact) or f16 (half the
        /// bytes).
        #[arg(long, value_enum, default_value = "f32")]
        search_storage: hartonomous_runtime::search::VectorStorage,
        /// GPU bytes the search index keeps resident (suffixes K, M, G); pieces beyond it are
        /// uploaded as they are scanned.
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes, default_value = "1G")]
        search_memory: u64,
        /// Seconds between re-reads of keys, access rules and limits (a new key works at once;
        /// a revoked one is refused within this).
        #[arg(long, value_name = "SECONDS", default_value_t = serve::ServeOptions::DEFAULT_GOVERNANCE_REFRESH_SECONDS)]
        governance_refresh: f64,
    },
    /// Load a daemon the way its users do and report throughput, latency percentiles, time to
    /// first token, errors by kind and the daemon's metrics. Without --target it starts a daemon
    /// in this process over the store (--db, or the default store).
    Bench {
        /// The daemon's base URL (https://host:port); without it, an embedded daemon.
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// PEM certificate (or CA) to trust for --target; the system's roots otherwise.
        #[arg(long, value_name = "PEM")]
        cacert: Option<PathBuf>,
        /// Bearer key for a daemon that requires one (or HARTONOMOUS_API_KEY).
        #[arg(long)]
        api_key: Option<String>,
        #[arg(long, value_enum, default_value = "embed")]
        scenario: hartonomous_runtime::bench::Scenario,
        /// The front door: REST over HTTPS, or gRPC on the same port (needs --cacert with
        /// --target).
        #[arg(long, value_enum, default_value = "https")]
        protocol: hartonomous_runtime::bench::Protocol,
        /// Concurrency levels, comma-separated: requests in flight at all times.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        concurrency: Vec<usize>,
        /// Measured seconds per level.
        #[arg(long, value_name = "SECONDS", conflicts_with = "requests")]
        duration: Option<f64>,
        /// Measured requests per level (default 100 when no --duration).
        #[arg(long)]
        requests: Option<u64>,
        /// Seconds of load before each level, not counted.
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
        warmup: f64,
        #[arg(long)]
        embed_model: Option<String>,
        #[arg(long)]
        generate_model: Option<String>,
        /// Tokens per generated answer (generate, chat, mixed).
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
        /// Write the report as JSON to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Draw throughput and latency against concurrency to this PNG file.
        #[arg(long, value_name = "PNG")]
        plot: Option<PathBuf>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// After the run, run the scenario's peer on the same machine on the same inputs and
        /// print ratios: candle for embed, llama.cpp (llama-cpp-python) for generate and chat,
        /// FAISS for search. The peers are found beside this binary and in the checkout it was
        /// built from; --peer names another.
        #[arg(long)]
        compare: bool,
        /// The peer to compare with: a shell command that reads the job (JSON) on stdin and
        /// prints its report (JSON) last on stdout (see `hartonomous_runtime::bench::PeerJob`).
        /// Implies --compare.
        #[arg(long, value_name = "COMMAND")]
        peer: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// API keys (bearer tokens) of tenants: create, list, revoke.
    Keys {
        #[command(subcommand)]
        command: access::KeysCommand,
        #[command(flatten)]
        db: Db,
    },
    /// Access rules (allow/deny × operation × model, deny-first), tenants' limits and plans'
    /// rates.
    Policy {
        #[command(subcommand)]
        command: access::PolicyCommand,
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

/// The data folder: `$HARTONOMOUS_DATA_DIR`, else `$XDG_DATA_HOME/hartonomous`, else
/// `~/.local/share/hartonomous`.
fn data_dir() -> anyhow::Result<PathBuf> {
    let non_empty = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    Ok(match (non_empty("HARTONOMOUS_DATA_DIR"), non_empty("XDG_DATA_HOME"), non_empty("HOME")) {
        (Some(dir), _, _) => dir,
        (None, Some(xdg), _) => xdg.join("hartonomous"),
        (None, None, Some(home)) => home.join(".local/share/hartonomous"),
        (None, None, None) => bail!("no store given: pass --db, or set HARTONOMOUS_DATA_DIR or HOME"),
    })
}

/// `1024`, `64K`, `512M`, `2G` (binary multiples).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("{text:?} is not a byte count like 4096, 512M or 2G"))?;
    n.checked_shl(shift).filter(|v| v >> shift == n).ok_or_else(|| format!("{text} bytes is too large"))
}

/// The default store file; `create` makes its folder.
fn default_db(create: bool) -> anyhow::Result<String> {
    let dir = data_dir()?;
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

/// Runs the harness against `target`, or against a daemon started here over the store.
/// The peer `--compare` runs for `scenario`: the candle peer built beside this binary for embed,
/// the llama.cpp and FAISS scripts of the checkout this binary was built from (with the Python
/// in HARTONOMOUS_LLAMACPP_PYTHON or HARTONOMOUS_FAISS_PYTHON, which scripts/lib.sh sets up).
fn default_peer(scenario: hartonomous_runtime::bench::Scenario) -> anyhow::Result<String> {
    use hartonomous_runtime::bench::Scenario;
    let quote = |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let script = |name: &str| -> anyhow::Result<PathBuf> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/scripts").join(name);
        anyhow::ensure!(path.is_file(), "the peer script {} is not there (it ships in the repository, not with the binary): pass --peer", path.display());
        Ok(path)
    };
    let python = |var: &str| -> anyhow::Result<String> {
        let value = std::env::var(var).ok().filter(|p| !p.is_empty());
        value.ok_or_else(|| anyhow::anyhow!("set {var} to a Python with the peer's packages (scripts/lib.sh sets it up), or pass --peer"))
    };
    Ok(match scenario {
        Scenario::Embed => {
            let exe = std::env::current_exe().context("finding this binary")?;
            let candle = exe.with_file_name("minilm_candle");
            anyhow::ensure!(
                candle.is_file(),
                "the candle peer is not beside this binary ({}): build it with `cargo build --release -p hartonomous-peer-candle`, or pass --peer",
                candle.display()
            );
            format!("{} --job", quote(&candle))
        }
        Scenario::Generate | Scenario::Chat => {
            format!("{} {} --job", quote(std::path::Path::new(&python("HARTONOMOUS_LLAMACPP_PYTHON")?)), quote(&script("llamacpp_generate_bench.py")?))
        }
        Scenario::Search => format!("{} {} --job", quote(std::path::Path::new(&python("HARTONOMOUS_FAISS_PYTHON")?)), quote(&script("faiss_search_bench.py")?)),
        other => bail!("--compare has peers for embed, generate, chat and search, not {other:?}"),
    })
}

async fn bench_command(
    target: Option<String>,
    cacert: Option<PathBuf>,
    api_key: Option<String>,
    protocol: hartonomous_runtime::bench::Protocol,
    options: hartonomous_runtime::bench::BenchOptions,
    db: &Db,
) -> anyhow::Result<hartonomous_runtime::bench::BenchReport> {
    use hartonomous_runtime::bench::{self, Protocol, ProgressEvent, Target};
    // A gRPC channel over TLS trusting `pem`, to `base`'s host and port.
    let grpc = |base: &str, pem: &[u8]| -> anyhow::Result<Option<tonic::transport::Channel>> {
        if protocol != Protocol::Grpc {
            return Ok(None);
        }
        let host = base.trim_start_matches("https://").split([':', '/']).next().unwrap_or("localhost").to_string();
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem)).domain_name(host);
        Ok(Some(tonic::transport::Channel::from_shared(base.to_string())?.tls_config(tls)?.connect_lazy()))
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let progress = |event: ProgressEvent| match event {
        ProgressEvent::Setup(what) => bar.set_message(what.to_string()),
        ProgressEvent::Level { concurrency, requests, duration } => {
            bar.reset();
            match (requests, duration) {
                (_, Some(d)) => bar.set_message(format!("concurrency {concurrency}: {:.0} s measured", d.as_secs_f64())),
                (r, None) => bar.set_message(format!("concurrency {concurrency}: {} requests measured", r.unwrap_or(100))),
            }
        }
        ProgressEvent::Completed { errors } => {
            bar.inc(1);
            if errors > 0 {
                bar.set_prefix(format!("{errors} errors"));
            }
        }
        ProgressEvent::LevelDone => bar.println(format!("level done: {} requests", bar.position())),
    };
    let mut builder = reqwest::Client::builder().https_only(true);
    let Some(base) = target else {
        // An embedded daemon over the store, on a free loopback port, with its own certificate.
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(open_store(db, false).await?);
        let data_dir = std::env::temp_dir().join(format!("hartonomous-bench-{}", std::process::id()));
        let options_serve = serve::ServeOptions {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            insecure_http: false,
            data_dir: data_dir.clone(),
            gpu_memory: None,
            models: Vec::new(),
            weights_source: hartonomous_runtime::pager::WeightsSource::Atoms,
            lineage: serve::LineageMode::Async,
            max_batch_tokens: serve::ServeOptions::DEFAULT_MAX_BATCH_TOKENS,
            queue_capacity: serve::ServeOptions::DEFAULT_QUEUE_CAPACITY,
            max_sequences: serve::ServeOptions::DEFAULT_MAX_SEQUENCES,
            context: serve::ServeOptions::DEFAULT_CONTEXT,
            search_storage: hartonomous_runtime::search::VectorStorage::F32,
            search_memory: serve::ServeOptions::DEFAULT_SEARCH_MEMORY,
            governance_refresh: std::time::Duration::from_secs_f64(serve::ServeOptions::DEFAULT_GOVERNANCE_REFRESH_SECONDS),
        };
        bar.set_message("starting an embedded daemon");
        let daemon = serve::start(store, options_serve).await?;
        let tls = daemon.tls.clone().context("the embedded daemon serves HTTPS")?;
        let pem = std::fs::read(&tls.cert).with_context(|| format!("reading {}", tls.cert.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        let base = format!("https://localhost:{}", daemon.addr.port());
        let target = Target { grpc: grpc(&base, &pem)?, base, client: builder.build()?, api_key };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(daemon.run(
            async {
                let _ = stopped.await;
            },
            std::time::Duration::from_secs(30),
        ));
        let report = bench::run(target, options, &progress).await;
        let _ = stop.send(());
        let _ = running.await;
        let _ = std::fs::remove_dir_all(&data_dir);
        bar.finish_and_clear();
        return Ok(report?);
    };
    let base = base.trim_end_matches('/').to_string();
    let mut channel = None;
    if let Some(path) = &cacert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        channel = grpc(&base, &pem)?;
    } else if protocol == Protocol::Grpc {
        bail!("--protocol grpc with --target needs --cacert (the PEM of the daemon's certificate or its CA)");
    }
    let report = bench::run(Target { base, client: builder.build()?, api_key, grpc: channel }, options, &progress).await;
    bar.finish_and_clear();
    Ok(report?)
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
        Command::Bench {
            target,
            cacert,
            api_key,
            scenario,
            protocol,
            concurrency,
            duration,
            requests,
            warmup,
            embed_model,
            generate_model,
            max_tokens,
            out,
            plot,
            json,
            compare,
            peer,
            db,
        } => {
            use hartonomous_runtime::bench::BenchOptions;
            let peer = match peer {
                Some(command) => Some(command),
                None if compare => Some(default_peer(scenario)?),
                None => None,
            };
            let api_key = api_key.or_else(|| std::env::var("HARTONOMOUS_API_KEY").ok().filter(|k| !k.is_empty()));
            let seconds = |name: &str, v: f64| -> anyhow::Result<std::time::Duration> {
                if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
                    bail!("{name} is {v}; give seconds from 0 to 86400");
                }
                Ok(std::time::Duration::from_secs_f64(v))
            };
            let options = BenchOptions {
                scenario,
                concurrency,
                duration: duration.map(|d| seconds("--duration", d)).transpose()?,
                requests,
                warmup: seconds("--warmup", warmup)?,
                embed_model,
                generate_model,
                max_tokens,
                peer: peer.clone(),
            };
            let mut report = bench_command(target, cacert, api_key, protocol, options, &db).await?;
            if let (Some(command), Some(job)) = (peer, report.peer_job.clone()) {
                eprintln!("running the peer: {command}");
                let peer_report = tokio::task::spawn_blocking(move || hartonomous_runtime::bench::run_peer(&command, &job)).await??;
                report.peer = Some(peer_report);
            }
            if let Some(path) = &out {
                std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = &plot {
                hartonomous_runtime::bench::plot(&report, path)?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Keys { command, db } => {
            let store = open_store(&db, false).await?;
            access::keys(store.as_ref(), command).await?;
        }
        Command::Policy { command, db } => {
            let store = open_store(&db, false).await?;
            access::policy(store.as_ref(), command).await?;
        }
        Command::Student { parent, name, layers, prune_importance, db, json } => {
            use hartonomous_runtime::student::{create_student, Derivation, StudentOptions};
            // clap's group makes exactly one of the two present.
            let derivation = match (layers, prune_importance) {
                (Some(range), None) => Derivation::Blocks(range),
                (None, Some(q)) => Derivation::Prune(q),
                _ => bail!("give exactly one of --layers and --prune-importance"),
            };
            let store = open_store(&db, false).await?;
            let report = create_student(store.as_ref(), &StudentOptions { parent, name, derivation }).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Serve {
            db,
            listen,
            tls_cert,
            tls_key,
            insecure_http,
            gpu_memory,
            models,
            weights_source,
            lineage,
            max_batch_tokens,
            queue,
            max_sequences,
            context,
            search_storage,
            search_memory,
            governance_refresh,
        } => {
            if !governance_refresh.is_finite() || !(0.0..=3600.0).contains(&governance_refresh) {
                bail!("--governance-refresh is {governance_refresh}; give seconds from 0 to 3600");
            }
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("HARTONOMOUS_LOG").unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(open_store(&db, false).await?);
            let options = serve::ServeOptions {
                listen,
                tls: tls_cert.zip(tls_key),
                insecure_http,
                data_dir: data_dir()?,
                gpu_memory,
                models,
                weights_source,
                lineage,
                max_batch_tokens,
                queue_capacity: queue,
                max_sequences,
                context,
                search_storage,
                search_memory,
                governance_refresh: std::time::Duration::from_secs_f64(governance_refresh),
            };
            let daemon = serve::start(store.clone(), options).await?;
            if let Some(tls) = &daemon.tls {
                println!(
                    "certificate {} ({}), SHA-256 fingerprint {}",
                    tls.cert.display(),
                    if tls.generated { "self-signed, generated now" } else { "reused" },
                    tls.fingerprint
                );
            } else {
                eprintln!("warning: --insecure-http: plain HTTP on loopback, for development only; SQL Server calls HTTPS only");
            }
            println!("adapter {}; GPU memory budget {} bytes", daemon.adapter, daemon.budget);
            for m in &daemon.models {
                println!("serving {} ({} dimensions, weights root {})", m.label(), m.dimension, m.weights_root);
            }
            for (label, context, sequences) in &daemon.generators {
                println!("serving {label} (generation: {sequences} sequences of {context} tokens)");
            }
            let insecure = if daemon.scheme == "https" { "-k " } else { "" };
            println!("listening on {scheme}://{addr}; try:", scheme = daemon.scheme, addr = daemon.addr);
            if let Some(first) = daemon.models.first() {
                println!(
                    "  curl -s {insecure}{scheme}://{addr}/v1/embeddings -H 'content-type: application/json' -d '{{\"model\":\"{name}\",\"input\":\"hello world\"}}'",
                    scheme = daemon.scheme,
                    addr = daemon.addr,
                    name = first.name,
                );
            }
            if let Some((label, ..)) = daemon.generators.first() {
                let name = label.split(':').next().unwrap_or(label);
                println!(
                    "  curl -s {insecure}{scheme}://{addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{name}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}],\"max_tokens\":32}}'",
                    scheme = daemon.scheme,
                    addr = daemon.addr,
                );
            }
            let report = daemon.run(serve::shutdown_signal(), std::time::Duration::from_secs(30)).await?;
            println!(
                "shut down in {:.1} s; {} queued lineage records flushed to {}",
                report.elapsed.as_secs_f64(),
                report.lineage_flushed,
                store.location()
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
    // A derived model names its parent; one whose parent was removed says so.
    let parent = |m: &ModelRow| match (m.parent, &m.derived_by) {
        (Some(id), _) => models.iter().find(|p| p.id == id).map_or_else(|| format!("model {}", id.0), ModelRow::label),
        (None, Some(_)) => "(removed)".into(),
        (None, None) => "-".into(),
    };
    let parent_width = models.iter().map(|m| parent(m).len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$}  {:<12}  {:<11}  {:>7}  {:>12}  {:>12}  {:<9}  {:<16}  {:<parent_width$}  {}\n",
        "model", "architecture", "format", "tensors", "parameters", "atom bytes", "status", "weights root", "parent", "created"
    );
    for m in models {
        let root = m.weights_root.map(|r| r.to_hex()[..16].to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<width$}  {:<12}  {:<11}  {:>7}  {:>12}  {:>12}  {:<9}  {:<16}  {:<parent_width$}  {}\n",
            m.label(),
            m.architecture,
            m.format,
            m.tensor_count,
            m.parameter_count,
            m.atom_bytes,
            m.status.as_str(),
            root,
            parent(m),
            m.created_at
        ));
    }
    out
}
