//! `hartonomous bench` end to end: the real binary with an embedded daemon over a fresh store,
//! the no-op and embedding scenarios at two concurrencies, the JSON report it writes, and the
//! peer protocol of --compare with a stand-in peer.

mod support;

use serde_json::Value;
use support::*;

#[test]
fn bench_runs_scenarios_against_an_embedded_daemon_and_writes_its_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", "all-MiniLM-L6-v2"]);
    for (scenario, unit) in [("noop", "requests"), ("embed", "sentences")] {
        let out = dir.path().join(format!("{scenario}.json"));
        let table = run_ok(&["bench", "--db", s(&db), "--scenario", scenario, "--concurrency", "1,3", "--requests", "6", "--warmup", "0", "--out", s(&out)]);
        assert!(table.contains("p99 ms"), "the table is printed: {table}");
        let report: Value = serde_json::from_slice(&std::fs::read(&out).expect("the report is written")).expect("JSON");
        assert_eq!(report["scenario"], scenario);
        let levels = report["levels"].as_array().expect("levels");
        assert_eq!(levels.iter().map(|l| l["concurrency"].as_u64()).collect::<Vec<_>>(), vec![Some(1), Some(3)]);
        for level in levels {
            assert_eq!(level["requests"], 6, "exactly the requests asked for: {level}");
            assert_eq!(level["errors"], serde_json::json!({}), "{level}");
            assert_eq!(level["unit"], unit);
            let latency = &level["latency_ms"];
            let (p50, p99, max) = (latency["p50"].as_f64().unwrap_or(-1.0), latency["p99"].as_f64().unwrap_or(-1.0), latency["max"].as_f64().unwrap_or(-1.0));
            assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "ordered percentiles: {latency}");
        }
        if scenario == "embed" {
            assert!(levels[1]["daemon"]["samples"].as_u64().unwrap_or(0) >= 1, "the daemon's metrics were sampled: {}", levels[1]);
        }
    }
    // The same scenario over gRPC, on the same port, with its plot.
    let out = dir.path().join("grpc.json");
    let png = dir.path().join("grpc.png");
    run_ok(&["bench", "--db", s(&db), "--scenario", "embed", "--protocol", "grpc", "--concurrency", "1,2", "--requests", "4", "--warmup", "0", "--out", s(&out), "--plot", s(&png)]);
    let image = std::fs::read(&png).expect("the plot is written");
    // A PNG (its signature), 1200 × 500 (IHDR's width and height, big-endian, after the signature
    // and the chunk's length and type).
    assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes([image[16], image[17], image[18], image[19]]), 1200);
    assert_eq!(u32::from_be_bytes([image[20], image[21], image[22], image[23]]), 500);
    let report: Value = serde_json::from_slice(&std::fs::read(&out).expect("the report is written")).expect("JSON");
    assert_eq!(report["protocol"], "grpc");
    assert_eq!(report["levels"][0]["requests"], 4, "{report}");
    assert_eq!(report["levels"][0]["errors"], serde_json::json!({}), "{report}");

    // Bad input is named.
    let out = hartonomous(&["bench", "--db", s(&db), "--concurrency", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency"), "{}", String::from_utf8_lossy(&out.stderr));

    // --peer: the job goes to the peer's stdin; its last stdout line is its report, and the
    // ratios are ours over its figures. The peer here is a shell line that keeps the job and
    // answers a fixed 2.5 sentences/s at both levels.
    let job_file = dir.path().join("job.json");
    let answer = r#"{"peer":"fixed test peer","levels":[{"concurrency":1,"items_per_second":2.5},{"concurrency":2,"items_per_second":2.5}]}"#;
    let peer = format!("cat > '{}'; echo 'progress line, not the report'; echo '{answer}'", job_file.display());
    let out = dir.path().join("compare.json");
    let table = run_ok(&["bench", "--db", s(&db), "--scenario", "embed", "--concurrency", "1,2", "--requests", "4", "--warmup", "0", "--peer", &peer, "--out", s(&out)]);
    let job: Value = serde_json::from_slice(&std::fs::read(&job_file).expect("the peer got the job")).expect("JSON job");
    assert_eq!(job["scenario"], "embed");
    assert_eq!(job["levels"], serde_json::json!([1, 2]));
    let inputs = job["inputs"].as_array().expect("inputs");
    let corpus_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/data/python_doc_sentences.txt");
    let corpus: Vec<Value> = std::fs::read_to_string(corpus_file)
        .expect("the shipped corpus")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| Value::String(l.to_string()))
        .collect();
    assert_eq!(inputs.len(), 3921);
    assert!(inputs == &corpus, "the job's inputs are the shipped corpus, in the order the harness sends it");
    let report: Value = serde_json::from_slice(&std::fs::read(&out).expect("the report is written")).expect("JSON");
    assert_eq!(report["peer"]["peer"], "fixed test peer");
    assert_eq!(report["peer"]["levels"][1]["items_per_second"], 2.5);
    let ours = report["levels"][1]["items_per_second"].as_f64().expect("ours");
    let peer_rows: Vec<&str> = table.lines().skip_while(|l| !l.starts_with("peer: fixed test peer")).collect();
    let ratio_line = peer_rows.iter().find(|l| l.trim_start().starts_with("2 ")).unwrap_or_else(|| panic!("a ratio row for level 2: {table}"));
    let ratio: f64 = ratio_line.split_whitespace().last().and_then(|r| r.parse().ok()).expect("a ratio");
    assert!((ratio - ours / 2.5).abs() < 1e-3, "ratio {ratio} is ours ({ours}) over 2.5: {table}");

    // A peer that fails, or answers other levels, fails the run with the reason.
    for (peer, reason) in [("exit 3", "exited with"), ("cat > /dev/null; echo '{\"peer\":\"p\",\"levels\":[]}'", "answered levels")] {
        let out = hartonomous(&["bench", "--db", s(&db), "--scenario", "embed", "--concurrency", "1", "--requests", "1", "--warmup", "0", "--peer", peer]);
        assert!(!out.status.success(), "a failing peer fails the run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "stderr names the reason ({reason}): {stderr}");
    }
}
