//! `hartonomous serve` as a user runs it: the real binary, a generated certificate, the curl line
//! it prints run by curl itself, and a graceful shutdown on SIGTERM that flushes lineage.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

const MODEL: &str = "all-MiniLM-L6-v2";

#[test]
fn serve_prints_a_working_curl_line_and_shuts_down_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MODEL]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_hartonomous"))
        .args(["serve", "--db", s(&db), "--listen", "127.0.0.1:0", "--lineage", "async"])
        .env("HARTONOMOUS_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts hartonomous serve");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let curl_line = loop {
        let line = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the daemon did not print its curl line; it printed:\n{}", lines.join("\n"))
        });
        lines.push(line.clone());
        if line.trim_start().starts_with("curl ") {
            break line.trim().to_string();
        }
    };
    let printed = lines.join("\n");
    assert!(printed.contains("self-signed, generated now"), "{printed}");
    assert!(printed.contains("SHA-256 fingerprint"), "{printed}");
    assert!(printed.contains(&format!("serving {MODEL}:1 (384 dimensions")), "{printed}");
    let cert_dir = dir.path().join("data/tls");
    assert!(cert_dir.join("hartonomous-cert.pem").is_file(), "the certificate lives in the data folder");

    // The printed line, run as printed (it passes -k for the self-signed certificate).
    let out = Command::new("sh").args(["-c", &curl_line]).output().expect("runs curl");
    assert!(out.status.success(), "{curl_line} failed: {}", String::from_utf8_lossy(&out.stderr));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("curl got JSON");
    assert_eq!(body["data"][0]["embedding"].as_array().map(Vec::len), Some(384), "{body}");
    let request_id = body["hartonomous"]["request_id"].as_str().expect("request id").to_string();

    // SIGTERM: the daemon stops accepting, finishes, flushes lineage and exits 0.
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("daemon exits");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "exit status {status}; output:\n{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.starts_with("shut down in")), "{}", rest.join("\n"));

    let conn = raw(&db);
    let stored: String = conn
        .query_row("SELECT Status FROM InferenceRequests WHERE RequestKey = ?1", [&request_id], |r| r.get(0))
        .expect("the curl request's lineage was flushed before exit");
    assert_eq!(stored, "succeeded");
}

#[test]
fn insecure_http_is_refused_off_loopback_and_bad_options_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MODEL]);
    let out = hartonomous(&["serve", "--db", s(&db), "--listen", "0.0.0.0:0", "--insecure-http"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    let out = hartonomous(&["serve", "--db", s(&db), "--gpu-memory", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("512M"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = hartonomous(&["serve", "--db", s(&db), "--models", "no-such-model", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-model"), "{}", String::from_utf8_lossy(&out.stderr));
}
