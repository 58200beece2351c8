//! Recall of the hybrid search (the coarse-key prefilter, then exact scores of the candidates)
//! against exact search, on a real corpus: the sentences of `benches/data/python_doc_sentences.txt`
//! embedded by a stored BERT-family model (all-MiniLM-L6-v2), written to the store as the daemon
//! writes embeddings, and searched through the daemon's index (`hartonomous_runtime::search`).
//!
//! Every 20th sentence is held out as a query; the others are the corpus. For each candidate
//! count C the report gives recall@k (the share of the exact top-k that the hybrid top-k finds,
//! averaged over the queries), C as a share of the corpus, and the median latency of one query.
//!
//! Run: `search_recall --db STORE` after `hartonomous ingest .../model.safetensors --db STORE
//! --name all-MiniLM-L6-v2` (`scripts/bench-search.sh recall` does both).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use hartonomous_kernels::ops::similarity::Metric;
use hartonomous_kernels::Gpu;
use hartonomous_runtime::models::bert::{BertConfig, BertEncoder, BertTokenizer};
use hartonomous_runtime::pager::{Pager, WeightsSource};
use hartonomous_runtime::search::{IndexOptions, SearchIndex, SearchMode, SearchRequest};
use hartonomous_runtime::store::sqlite::SqliteStore;
use hartonomous_runtime::store::{ContentAtom, Embedding, Store};

#[derive(Parser)]
#[command(about = "Recall@k of the hybrid (coarse-key prefiltered) search against exact search on a real sentence corpus")]
struct Args {
    /// A SQLite store with the embedding model ingested; the corpus's embeddings are added to it.
    #[arg(long)]
    db: PathBuf,
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    model: String,
    #[arg(long, default_value = "benches/data/python_doc_sentences.txt")]
    corpus: PathBuf,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Candidate counts of the hybrid mode, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100,200,400,800,1600")]
    candidates: Vec<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.corpus).with_context(|| format!("reading {}", args.corpus.display()))?;
    let sentences: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    ensure!(sentences.len() >= 100, "{} has only {} sentences", args.corpus.display(), sentences.len());
    type Numbered<'a> = Vec<(usize, &'a str)>;
    let (queries, corpus): (Numbered, Numbered) = sentences.iter().copied().enumerate().partition(|(i, _)| i % 20 == 0);

    let runtime = tokio::runtime::Runtime::new()?;
    let store: Arc<dyn Store> = Arc::new(runtime.block_on(SqliteStore::open(&args.db, false)).with_context(|| format!("opening {}", args.db.display()))?);
    let (row, material, layers) = runtime.block_on(async {
        let row = store.model(&args.model, None).await?.with_context(|| format!("no model {:?} in {}: ingest it first", args.model, args.db.display()))?;
        let material = store.model_material(row.id).await?.context("the model has no stored configuration")?;
        let layers = store.layers(row.id).await?;
        anyhow::Ok((row, material, layers))
    })?;
    let label = row.label();
    let config = BertConfig::from_json(&label, &material.config_json)?;
    let tokenizer = BertTokenizer::new(&label, &material, &config)?;
    let encoder = BertEncoder::new(&label, config, layers)?;
    let gpu = Arc::new(Gpu::new()?);
    let mut pager = Pager::new(gpu.clone(), store.clone(), runtime.handle().clone(), 1 << 30, WeightsSource::Atoms);
    eprintln!("adapter: {}", gpu.report());

    // Batches of 64 sentences of similar length (as the daemon batches), so little is padding.
    let mut embed = |texts: &[(usize, &str)]| -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|(_, t)| tokenizer.encode_text(t).map(|e| e.ids)).collect::<Result<_, _>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(64) {
            let slices: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, vector) in chunk.iter().zip(encoder.embed(&mut pager, &slices)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    };
    let started = Instant::now();
    let corpus_vectors = embed(&corpus)?;
    let query_vectors = embed(&queries)?;
    eprintln!("embedded {} sentences in {:.1} s", corpus.len() + queries.len(), started.elapsed().as_secs_f64());
    runtime.block_on(async {
        let atoms: Vec<ContentAtom> = corpus.iter().map(|(_, t)| ContentAtom::text(*t)).collect();
        let ids = store.put_content_atoms(&atoms).await?;
        let embeddings: Vec<Embedding> = ids.iter().zip(&corpus_vectors).map(|(&atom, v)| Embedding { atom, vector: v.clone() }).collect();
        store.put_embeddings(row.id, &embeddings).await?;
        anyhow::Ok(())
    })?;

    let index = Arc::new(SearchIndex::new(gpu.clone(), IndexOptions::default()));
    let search = |mode: SearchMode, query: &[f32]| -> Result<(Vec<i64>, f64)> {
        let request = SearchRequest { queries: vec![query.to_vec()], k: args.k, metric: Metric::Cosine, modality: None, mode };
        let t = Instant::now();
        let outcome = runtime.block_on(index.search(store.as_ref(), row.id, request))?;
        Ok((outcome.results[0].hits.iter().map(|h| h.atom.0).collect(), t.elapsed().as_secs_f64()))
    };
    search(SearchMode::Exact, &query_vectors[0])?; // loads the index
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2] * 1e3
    };
    let mut exact = Vec::with_capacity(query_vectors.len());
    let mut exact_times = Vec::new();
    for q in &query_vectors {
        let (ids, t) = search(SearchMode::Exact, q)?;
        exact.push(ids);
        exact_times.push(t);
    }
    println!("corpus: {} sentences embedded by {label}; {} held-out queries; k = {}", corpus.len(), queries.len(), args.k);
    println!("| mode | candidates | share of corpus | recall@{} | ms per query (median) |", args.k);
    println!("|---|---:|---:|---:|---:|");
    println!("| exact | {} | 100% | 1.000 | {:.2} |", corpus.len(), median(exact_times));
    for &c in &args.candidates {
        let mut found = 0usize;
        let mut times = Vec::new();
        for (q, want) in query_vectors.iter().zip(&exact) {
            let (ids, t) = search(SearchMode::Hybrid { candidates: c }, q)?;
            found += ids.iter().filter(|id| want.contains(id)).count();
            times.push(t);
        }
        let recall = found as f64 / (exact.len() * args.k) as f64;
        println!("| hybrid | {c} | {:.1}% | {recall:.3} | {:.2} |", 100.0 * c as f64 / corpus.len() as f64, median(times));
    }
    Ok(())
}
