//! Search, aggregates and ensembles end to end: models ingested into a fresh SQLite store by the
//! real binary, the daemon over HTTPS, a real HTTP client. The references are computed here, in
//! f64 with plain loops, from the vectors the test itself wrote (never from the daemon's output):
//! - `/v1/search` against an exact CPU top-k (ids, order, ties to the lower atom id) for the
//!   three metrics, batched, with a modality filter, the hybrid mode, and the index following
//!   rows that another writer adds or replaces in the store;
//! - `/v1/aggregate` against CPU aggregates, over inline vectors and over stored atom ids;
//! - `/v1/ensemble`: a model with itself equals the model; weights (1, 0) equal the first member
//!   and (0, 1) the second, where the second is a different model (MiniLM with one tensor
//!   negated, or a 3-block student of MiniLM, served over HTTPS like any model); SmolLM2 with
//!   itself decodes greedily what SmolLM2 alone does.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hartonomous_runtime::serve::ServeOptions;
use hartonomous_runtime::store::sqlite::SqliteStore;
use hartonomous_runtime::store::{ContentAtom, ContentAtomId, Embedding, ModelId, Store};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::daemon::TestDaemon;
use support::*;

const MINILM: &str = "all-MiniLM-L6-v2";
const EDITED: &str = "minilm-edited";
const SMOLLM2: &str = "SmolLM2-135M-Instruct";
const STUDENT: &str = "minilm-student3";
/// The tensor changed in the second embedding model (every value negated).
const EDITED_TENSOR: &str = "encoder.layer.0.attention.self.query.weight";
const D: usize = 384;

struct Stored {
    dir: tempfile::TempDir,
    db: PathBuf,
}

/// A store with the named models ingested: MiniLM always; the edited copy and SmolLM2 on request.
fn stored(edited: bool, smollm2: bool) -> Stored {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MINILM]);
    if edited {
        // The whole model folder (config, tokenizer, pooling) with one tensor changed.
        let copy = dir.path().join("minilm-edited");
        copy_dir(minilm_path().parent().expect("the model's folder"), &copy);
        write_with_tensor_negated(&minilm_path(), &copy.join("model.safetensors"), EDITED_TENSOR);
        run_ok(&["ingest", "--db", s(&db), s(&copy.join("model.safetensors")), "--name", EDITED]);
    }
    if edited {
        // A 3-block student of MiniLM: the parent's atoms, served like any model.
        run_ok(&["student", "--db", s(&db), "--from", MINILM, "--name", STUDENT, "--layers", "0-2"]);
    }
    if smollm2 {
        run_ok(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", SMOLLM2]);
    }
    Stored { dir, db }
}

/// A copy of the safetensors file `src` with every f32 of `tensor` negated (its sign bit flipped):
/// a model whose embeddings differ clearly from the original's.
fn write_with_tensor_negated(src: &Path, dst: &Path, tensor: &str) {
    let mut bytes = std::fs::read(src).expect("reads the model");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).expect("header JSON");
    assert_eq!(header[tensor]["dtype"], "F32", "{tensor} is stored F32");
    let offsets = &header[tensor]["data_offsets"];
    let (start, end) = (offsets[0].as_u64().expect("start") as usize, offsets[1].as_u64().expect("end") as usize);
    let data = 8 + header_len;
    for i in (data + start..data + end).step_by(4) {
        bytes[i + 3] ^= 0x80;
    }
    std::fs::write(dst, bytes).expect("writes the copy");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates the copy");
    for entry in std::fs::read_dir(from).expect("reads the model folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copies");
        }
    }
}

fn options(stored: &Stored, search_memory: u64) -> ServeOptions {
    ServeOptions { search_memory, ..support::daemon::options(stored.dir.path().join("data")) }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

// ---- references -------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Metric {
    Cosine,
    L2,
    Dot,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }

    fn score(self, q: &[f32], x: &[f32]) -> f64 {
        let dot: f64 = q.iter().zip(x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let nq = q.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
        let nx = x.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
        match self {
            Metric::Dot => dot,
            Metric::Cosine if nq == 0.0 || nx == 0.0 => 0.0,
            Metric::Cosine => dot / (nq * nx),
            Metric::L2 => q.iter().zip(x).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum::<f64>().sqrt(),
        }
    }

    /// Nearer first; ties to the lower atom id.
    fn top_k(self, q: &[f32], corpus: &[(i64, Vec<f32>)], k: usize) -> Vec<(i64, f64)> {
        let mut scored: Vec<(i64, f64)> = corpus.iter().map(|(id, x)| (*id, self.score(q, x))).collect();
        scored.sort_by(|a, b| {
            let order = if self == Metric::L2 { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) };
            order.then(a.0.cmp(&b.0))
        });
        scored.truncate(k);
        scored
    }
}

/// The daemon's hits for one query equal the reference's ids in order. Integer vectors make dot
/// products, squared norms and so L2 distances exact in f32, so those must match exactly, ties
/// included. A cosine divides by square roots, rounded in f32: two atoms whose reference cosines
/// differ by less than `COSINE_TIE` (3 f32 ulps at 1) may trade places; exact ties (equal
/// vectors) may not, and nothing else may.
const COSINE_TIE: f64 = 4e-7;

#[track_caller]
fn assert_ranking(metric: Metric, hits: &Value, reference: &[(i64, f64)], corpus: &[(i64, Vec<f32>)], q: &[f32], what: &str) {
    let hits = hits.as_array().expect("results");
    assert_eq!(hits.len(), reference.len(), "{what}: {} hits, the reference has {}", hits.len(), reference.len());
    let slack = if metric == Metric::Cosine { COSINE_TIE } else { 0.0 };
    for (position, (hit, &(want, want_score))) in hits.iter().zip(reference).enumerate() {
        let got = hit["atom_id"].as_i64().expect("atom_id");
        let score = hit["score"].as_f64().expect("score");
        let got_reference = corpus.iter().find(|(id, _)| *id == got).map(|(_, x)| metric.score(q, x)).expect("a corpus atom");
        // Equal reference scores (duplicates) are a real tie: the lower atom id must come first.
        let near_tie = (got_reference - want_score).abs();
        assert!(
            got == want || (near_tie > 0.0 && near_tie <= slack),
            "{what}: position {position} is atom {got} (reference score {got_reference}), the reference has {want} ({want_score})"
        );
        let tolerance = 1e-5 * want_score.abs().max(1.0);
        assert!((score - got_reference).abs() <= tolerance, "{what}: atom {got} scored {score}, the reference {got_reference}");
    }
}

fn integer_vectors(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<Vec<f32>> {
    (0..n).map(|_| (0..D).map(|_| rng.random_range(-3i32..=3) as f32).collect()).collect()
}

/// Writes `vectors` as the embeddings (by `model`) of new text atoms, as another writer would.
async fn write_corpus(store: &SqliteStore, model: ModelId, tag: &str, vectors: &[Vec<f32>], modality: &str) -> Vec<(i64, Vec<f32>)> {
    let atoms: Vec<ContentAtom> = (0..vectors.len())
        .map(|i| match modality {
            "text" => ContentAtom::text(format!("{tag} document {i}")),
            other => ContentAtom { modality: other.into(), subtype: Some("png".into()), canonical_text: None, payload: Some(format!("{tag} {i}").into_bytes()) },
        })
        .collect();
    let ids = store.put_content_atoms(&atoms).await.expect("atoms stored");
    let embeddings: Vec<Embedding> = ids.iter().zip(vectors).map(|(&atom, v)| Embedding { atom, vector: v.clone() }).collect();
    store.put_embeddings(model, &embeddings).await.expect("embeddings stored");
    ids.iter().map(|a| a.0).zip(vectors.iter().cloned()).collect()
}

async fn model_id(store: &SqliteStore, name: &str) -> ModelId {
    store.model(name, None).await.expect("store").expect("model stored").id
}

// ---- search -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_equals_the_exact_cpu_top_k_for_every_metric_and_follows_the_store() {
    let stored = stored(false, false);
    let store = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let model = model_id(&store, MINILM).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut vectors = integer_vectors(&mut rng, 300);
    // Deliberate ties: every 7th vector repeats an earlier one exactly.
    for i in (7..vectors.len()).step_by(7) {
        vectors[i] = vectors[i / 7].clone();
    }
    let mut corpus = write_corpus(&store, model, "first", &vectors, "text").await;
    let daemon = TestDaemon::start(store.clone(), options(&stored, 1 << 30)).await;

    let queries = integer_vectors(&mut rng, 4);
    // Query 3 is a corpus vector that has a duplicate: its two copies tie at the top.
    let queries: Vec<Vec<f32>> = queries.into_iter().take(3).chain([vectors[1].clone()]).collect();
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        for k in [1, 10, 1024] {
            let answer = daemon
                .ok("/v1/search", &json!({"model": MINILM, "query": queries, "k": k, "metric": metric.name()}))
                .await;
            let data = answer["data"].as_array().expect("data");
            assert_eq!(data.len(), queries.len(), "one result list per query, batched");
            for (qi, q) in queries.iter().enumerate() {
                let reference = metric.top_k(q, &corpus, k);
                let what = format!("{} k={k} query {qi}", metric.name());
                assert_ranking(metric, &data[qi]["results"], &reference, &corpus, q, &what);
                assert_eq!(data[qi]["candidates_scanned"], corpus.len(), "{what}: an exact search scans every row");
            }
        }
    }
    let top = daemon.ok("/v1/search", &json!({"model": MINILM, "query": vectors[1], "k": 2})).await;
    let ids: Vec<i64> = top["data"][0]["results"].as_array().expect("results").iter().map(|h| h["atom_id"].as_i64().expect("id")).collect();
    assert_eq!(ids, vec![corpus[1].0, corpus[7].0], "the two copies tie; the lower atom id comes first");
    assert_eq!(top["data"][0]["results"][0]["text"], "first document 1", "hits carry their atom's text");

    // Another writer adds rows: the next search appends them.
    let added = write_corpus(&store, model, "second", &integer_vectors(&mut rng, 50), "text").await;
    corpus.extend(added);
    let q = &queries[0];
    let answer = daemon.ok("/v1/search", &json!({"model": MINILM, "query": q, "k": 20, "metric": "dot"})).await;
    assert_eq!(answer["hartonomous"]["index"]["refresh"]["kind"], "appended", "{answer}");
    assert_eq!(answer["hartonomous"]["index"]["rows"], corpus.len());
    assert_ranking(Metric::Dot, &answer["data"][0]["results"], &Metric::Dot.top_k(q, &corpus, 20), &corpus, q, "after an append");

    // ... and replaces one: the index reloads and scores the new vector.
    let replaced = corpus[5].0;
    let new_vector: Vec<f32> = q.iter().map(|v| v * 2.0).collect();
    store.put_embeddings(model, &[Embedding { atom: ContentAtomId(replaced), vector: new_vector.clone() }]).await.expect("replaced");
    corpus[5].1 = new_vector;
    let answer = daemon.ok("/v1/search", &json!({"model": MINILM, "query": q, "k": 5, "metric": "dot"})).await;
    assert_eq!(answer["hartonomous"]["index"]["refresh"]["kind"], "reloaded", "{answer}");
    assert_eq!(answer["data"][0]["results"][0]["atom_id"], replaced, "the replaced vector (2q) is now the best dot product");
    assert_ranking(Metric::Dot, &answer["data"][0]["results"], &Metric::Dot.top_k(q, &corpus, 5), &corpus, q, "after a replacement");

    // A modality filter: only the image atoms, exactly ranked among themselves.
    let images = write_corpus(&store, model, "pictures", &integer_vectors(&mut rng, 30), "image").await;
    let answer = daemon.ok("/v1/search", &json!({"model": MINILM, "query": q, "k": 10, "metric": "l2", "modality": "image"})).await;
    assert_ranking(Metric::L2, &answer["data"][0]["results"], &Metric::L2.top_k(q, &images, 10), &images, q, "image filter");
    assert_eq!(answer["data"][0]["candidates_scanned"], images.len());
    assert!(answer["data"][0]["results"][0]["payload_bytes"].as_u64().is_some(), "an image hit names its payload: {answer}");
    corpus.extend(images);

    // Hybrid with every row as a candidate is the exact search; with fewer, it scans that many.
    let exact = daemon.ok("/v1/search", &json!({"model": MINILM, "query": q, "k": 10})).await;
    let all = daemon.ok("/v1/search", &json!({"model": MINILM, "query": q, "k": 10, "mode": "hybrid", "candidates": corpus.len()})).await;
    assert_eq!(exact["data"][0]["results"], all["data"][0]["results"]);
    let some = daemon.ok("/v1/search", &json!({"model": MINILM, "query": q, "k": 10, "mode": "hybrid", "candidates": 40})).await;
    assert_eq!(some["data"][0]["candidates_scanned"], 40);
    assert_eq!(some["data"][0]["results"].as_array().map(Vec::len), Some(10));

    // Refusals name the field.
    daemon.refused("/v1/search", json!({"model": MINILM, "query": vec![1.0; 5], "k": 3}), 400, "query").await;
    daemon.refused("/v1/search", json!({"model": MINILM, "query": q, "k": 0}), 400, "k").await;
    daemon.refused("/v1/search", json!({"model": MINILM, "query": q, "k": 1025}), 400, "k").await;
    daemon.refused("/v1/search", json!({"model": MINILM, "query": q, "metric": "manhattan"}), 400, "metric").await;
    daemon.refused("/v1/search", json!({"model": "no-such-model", "query": q}), 404, "model").await;
    daemon.refused("/v1/search", json!({"model": MINILM, "query": q, "mode": "fuzzy"}), 400, "mode").await;
    daemon.refused("/v1/search", json!({"model": MINILM}), 400, "query").await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_beyond_the_gpu_budget_is_scanned_in_pieces_with_the_same_result() {
    let stored = stored(false, false);
    let store = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let model = model_id(&store, MINILM).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let corpus = write_corpus(&store, model, "big", &integer_vectors(&mut rng, 700), "text").await;
    // 100 KB of budget: less than one piece of 700 × 384 f32 (1.08 MB), so nothing is resident.
    let daemon = TestDaemon::start(store.clone(), options(&stored, 100_000)).await;
    let queries = integer_vectors(&mut rng, 2);
    for metric in [Metric::Cosine, Metric::L2] {
        let answer = daemon.ok("/v1/search", &json!({"model": MINILM, "query": queries, "k": 25, "metric": metric.name()})).await;
        for (qi, q) in queries.iter().enumerate() {
            let reference = metric.top_k(q, &corpus, 25);
            assert_ranking(metric, &answer["data"][qi]["results"], &reference, &corpus, q, &format!("beyond the budget, {}", metric.name()));
        }
    }
    let metrics = daemon.client.get(format!("{}/metrics", daemon.base)).send().await.expect("sent").text().await.expect("text");
    assert!(metrics.contains("hartonomous_search_resident_bytes 0"), "nothing fits the budget, so nothing stays resident:\n{metrics}");
    assert!(metrics.contains("hartonomous_search_indexed_rows 700"), "every row is indexed, resident or not:\n{metrics}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_embedded_by_the_daemon_are_found_by_a_text_query() {
    let stored = stored(false, false);
    let store = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let daemon = TestDaemon::start(store.clone(), options(&stored, 1 << 30)).await;
    let sentences = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A recipe for sourdough bread.", "The goalkeeper saved a penalty."];
    daemon.ok("/v1/embeddings", &json!({"model": MINILM, "input": sentences})).await;
    let answer = daemon.ok("/v1/search", &json!({"model": MINILM, "query": ["How do I bake bread?", "football match"], "k": 4})).await;
    assert_eq!(answer["data"][0]["results"][0]["text"], sentences[2], "{answer}");
    assert_eq!(answer["data"][1]["results"][0]["text"], sentences[3], "{answer}");
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "the queries' tokens are counted");
    // The same sentence as the query is its own nearest neighbour, at cosine 1.
    let own = daemon.ok("/v1/search", &json!({"model": MINILM, "query": sentences[1], "k": 1})).await;
    assert_eq!(own["data"][0]["results"][0]["text"], sentences[1]);
    assert!((own["data"][0]["results"][0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-5, "{own}");
    daemon.stop().await;
}

// ---- aggregates ---------------------------------------------------------------------------------

fn reference_aggregate(op: &str, x: &[Vec<f32>], weights: &[f64]) -> Vec<f64> {
    let n = x.len() as f64;
    let column = |j: usize| x.iter().map(move |r| f64::from(r[j]));
    (0..x[0].len())
        .map(|j| match op {
            "sum" => column(j).sum(),
            "average" => column(j).sum::<f64>() / n,
            "weighted_average" => column(j).zip(weights).map(|(v, w)| v * w).sum::<f64>() / weights.iter().sum::<f64>(),
            "std_dev" => {
                let mean = column(j).sum::<f64>() / n;
                (column(j).map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
            }
            "median" => {
                let mut c: Vec<f64> = column(j).collect();
                c.sort_by(f64::total_cmp);
                let m = c.len() / 2;
                if c.len() % 2 == 0 { (c[m - 1] + c[m]) / 2.0 } else { c[m] }
            }
            other => panic!("no reference for {other}"),
        })
        .collect()
}

fn reference_pairwise_cosine(x: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for i in 0..x.len() {
        for j in 0..x.len() {
            if i != j {
                total += Metric::Cosine.score(&x[i], &x[j]);
            }
        }
    }
    total / (x.len() * (x.len() - 1)) as f64
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    // f32 sums of N = 37 values of magnitude ~1: a few ulps of the running sum.
    let bad: Vec<usize> = (0..got.len()).filter(|&i| (f64::from(got[i]) - want[i]).abs() > 1e-5 * want[i].abs().max(1.0)).collect();
    assert!(bad.is_empty(), "{what}: {} of {} elements off, first at {}: {} vs {}", bad.len(), got.len(), bad[0], got[bad[0]], want[bad[0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_cpu_references_inline_and_by_atom_id() {
    let stored = stored(false, false);
    let store = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let model = model_id(&store, MINILM).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let x: Vec<Vec<f32>> = (0..36).map(|_| (0..16).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let weights: Vec<f64> = (0..x.len()).map(|_| rng.random_range(0.0..2.0)).collect();
    let daemon = TestDaemon::start(store.clone(), options(&stored, 1 << 30)).await;
    for op in ["sum", "average", "weighted_average", "median", "std_dev"] {
        let mut body = json!({"operation": op, "vectors": x});
        if op == "weighted_average" {
            body["weights"] = json!(weights);
        }
        let answer = daemon.ok("/v1/aggregate", &body).await;
        assert_close(&floats(&answer["result"]), &reference_aggregate(op, &x, &weights), op);
        assert_eq!(answer["count"], x.len());
    }
    // An odd count takes the middle value.
    let odd = &x[..35];
    let answer = daemon.ok("/v1/aggregate", &json!({"operation": "median", "vectors": odd})).await;
    assert_close(&floats(&answer["result"]), &reference_aggregate("median", odd, &[]), "median of 35");
    let answer = daemon.ok("/v1/aggregate", &json!({"operation": "average_pairwise_cosine", "vectors": x})).await;
    let got = answer["result"].as_f64().expect("a scalar");
    let want = reference_pairwise_cosine(&x);
    assert!((got - want).abs() < 1e-5, "average pairwise cosine {got}, reference {want}");

    // By atom ids: the stored embeddings of the model.
    let wide: Vec<Vec<f32>> = (0..9).map(|_| (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let stored_rows = write_corpus(&store, model, "aggregate", &wide, "text").await;
    let ids: Vec<i64> = stored_rows.iter().map(|(id, _)| *id).collect();
    let answer = daemon.ok("/v1/aggregate", &json!({"operation": "average", "atom_ids": ids, "model": MINILM})).await;
    assert_close(&floats(&answer["result"]), &reference_aggregate("average", &wide, &[]), "average by atom id");

    daemon.refused("/v1/aggregate", json!({"operation": "mode", "vectors": x}), 400, "operation").await;
    daemon.refused("/v1/aggregate", json!({"operation": "weighted_average", "vectors": x, "weights": [1.0]}), 400, "weights").await;
    daemon.refused("/v1/aggregate", json!({"operation": "sum", "vectors": [[1.0, 2.0], [1.0]]}), 400, "vectors").await;
    daemon.refused("/v1/aggregate", json!({"operation": "sum", "atom_ids": [ids[0], 999_999], "model": MINILM}), 400, "atom_ids").await;
    daemon.refused("/v1/aggregate", json!({"operation": "sum", "atom_ids": ids}), 400, "model").await;
    daemon.stop().await;
}

// ---- ensembles ----------------------------------------------------------------------------------

#[track_caller]
fn assert_same_vectors(got: &Value, want: &Value, what: &str) {
    let (got, want) = (got["data"].as_array().expect("data"), want["data"].as_array().expect("data"));
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (floats(&g["embedding"]), floats(&w["embedding"]));
        // Averaging a vector with itself, or with weight 0 beside it, is exact; renormalising a
        // unit vector in f64 moves an element by at most an f32 ulp or so.
        let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{what}: worst element difference {worst}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_ensembles_of_a_model_with_itself_or_weighted_one_zero_equal_the_member() {
    let stored = stored(true, false);
    let store = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let daemon = TestDaemon::start(store.clone(), options(&stored, 1 << 30)).await;
    let input = json!(["Ensembles average their members.", "A second sentence, longer than the first one is."]);
    let alone = daemon.ok("/v1/embeddings", &json!({"model": MINILM, "input": input})).await;
    let edited = daemon.ok("/v1/embeddings", &json!({"model": EDITED, "input": input})).await;
    let differs = floats(&alone["data"][0]["embedding"]).iter().zip(floats(&edited["data"][0]["embedding"])).any(|(a, b)| (a - b).abs() > 1e-4);
    assert!(differs, "the edited copy is a different model (else the weight tests below prove nothing)");

    let ensemble = |models: Value| json!({"models": models, "input": input, "output": "embedding"});
    let itself = daemon.ok("/v1/ensemble", &ensemble(json!([{"model": MINILM, "weight": 1}, {"model": MINILM, "weight": 1}]))).await;
    assert_same_vectors(&itself, &alone, "MiniLM with itself");
    let first = daemon.ok("/v1/ensemble", &ensemble(json!([{"model": MINILM, "weight": 1}, {"model": EDITED, "weight": 0}]))).await;
    assert_same_vectors(&first, &alone, "weights (1, 0)");
    let second = daemon.ok("/v1/ensemble", &ensemble(json!([{"model": MINILM, "weight": 0}, {"model": EDITED, "weight": 1}]))).await;
    assert_same_vectors(&second, &edited, "weights (0, 1)");
    assert_eq!(first["members"][1]["weight"], 0.0);

    // The student serves over HTTPS, differs from its parent, and ensembles like any member.
    let student = daemon.ok("/v1/embeddings", &json!({"model": STUDENT, "input": input})).await;
    assert_eq!(floats(&student["data"][0]["embedding"]).len(), D);
    let student_differs = floats(&alone["data"][0]["embedding"]).iter().zip(floats(&student["data"][0]["embedding"])).any(|(a, b)| (a - b).abs() > 1e-4);
    assert!(student_differs, "3 of 6 blocks give another embedding");
    let only_student = daemon.ok("/v1/ensemble", &ensemble(json!([{"model": MINILM, "weight": 0}, {"model": STUDENT, "weight": 2}]))).await;
    assert_same_vectors(&only_student, &student, "weights (0, 2) with the student");

    // Lineage names both members, their weights roots and normalised weights.
    let half = daemon.ok("/v1/ensemble", &ensemble(json!([{"model": MINILM, "weight": 3}, {"model": EDITED, "weight": 1}]))).await;
    let request_id = half["hartonomous"]["request_id"].as_str().expect("request id").to_string();
    let conn = raw(&stored.db);
    let mut steps = conn
        .prepare(
            "SELECT m.Name, s.WeightsRoot = m.WeightsRoot, json_extract(s.ParametersJson, '$.weight') FROM InferenceSteps s \
             JOIN InferenceRequests r ON r.RequestId = s.RequestId JOIN Models m ON m.ModelId = s.ModelId \
             WHERE r.RequestKey = ?1 AND s.Operation = 'ensemble_member' ORDER BY s.Ordinal",
        )
        .expect("query");
    let rows: Vec<(String, bool, f64)> = steps
        .query_map([&request_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1), (MINILM, true));
    assert_eq!((rows[1].0.as_str(), rows[1].1), (EDITED, true));
    assert!((rows[0].2 - 0.75).abs() < 1e-6 && (rows[1].2 - 0.25).abs() < 1e-6, "normalised weights: {rows:?}");

    daemon.refused("/v1/ensemble", ensemble(json!([{"model": MINILM, "weight": 0}])), 400, "models").await;
    daemon.refused("/v1/ensemble", ensemble(json!([{"model": MINILM, "weight": -1}])), 400, "models").await;
    daemon.refused("/v1/ensemble", ensemble(json!([{"model": "no-such-model"}])), 404, "models").await;
    daemon.refused("/v1/ensemble", json!({"models": [{"model": MINILM}], "input": "x", "output": "logits"}), 400, "output").await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoder_ensembled_with_itself_decodes_what_it_decodes_alone() {
    let stored = stored(false, true);
    let store = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let daemon = TestDaemon::start(store.clone(), options(&stored, 1 << 30)).await;
    let prompt = "The capital of France is";
    let alone = daemon.ok("/v1/completions", &json!({"model": SMOLLM2, "prompt": prompt, "max_tokens": 6, "temperature": 0})).await;
    let members = json!([{"model": SMOLLM2, "weight": 1}, {"model": SMOLLM2, "weight": 2}]);
    let next = daemon.ok("/v1/ensemble", &json!({"models": members, "input": prompt, "output": "next_token", "temperature": 0})).await;
    let completion = daemon
        .ok("/v1/ensemble", &json!({"models": members, "input": prompt, "output": "completion", "max_tokens": 6, "temperature": 0}))
        .await;
    let text = alone["choices"][0]["text"].as_str().expect("text");
    assert_eq!(completion["text"], text, "{completion}");
    assert!(text.starts_with(next["token"]["text"].as_str().expect("token text")), "{next} vs {text:?}");
    assert_eq!(completion["usage"]["completion_tokens"], alone["usage"]["completion_tokens"]);
    // An embedding model among generation members is a mismatch, named.
    let (status, answer) =
        daemon.post("/v1/ensemble", &json!({"models": [{"model": SMOLLM2}, {"model": MINILM}], "input": prompt, "output": "next_token"})).await;
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("models")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or("").contains("is an embedding model"), "{answer}");
    daemon.refused("/v1/ensemble", json!({"models": [{"model": SMOLLM2}], "input": "x", "output": "embedding"}), 400, "models").await;
    daemon.refused("/v1/ensemble", json!({"models": [{"model": "no-such-model"}], "input": prompt, "output": "completion"}), 404, "models").await;
    daemon
        .refused("/v1/ensemble", json!({"models": members, "input": prompt, "output": "completion", "temperature": -1}), 400, "temperature")
        .await;
    daemon.stop().await;
}
