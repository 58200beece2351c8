//! The official OpenAI Python client (the `openai` package from PyPI, pinned in scripts/lib.sh)
//! against the real `hartonomous serve` binary over HTTPS: SmolLM2-135M-Instruct ingested into a
//! fresh SQLite store, served with a generated certificate that the client trusts alone, and
//! `tests/scripts/openai_client_e2e.py` calling /v1/completions and /v1/chat/completions, whole and
//! streamed (the checks are in the script). The interpreter is `HARTONOMOUS_OPENAI_PYTHON`, which
//! `scripts/test.sh` sets up (`ensure_openai_client` in scripts/lib.sh).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

const MODEL: &str = "SmolLM2-135M-Instruct";

fn openai_python() -> PathBuf {
    let python = std::env::var_os("HARTONOMOUS_OPENAI_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "HARTONOMOUS_OPENAI_PYTHON is not set: run scripts/test.sh, or `source scripts/lib.sh && ensure_openai_client` \
             in this shell (it creates a virtual environment with the pinned `openai` package and sets the variable)"
        )
    });
    assert!(python.is_file(), "HARTONOMOUS_OPENAI_PYTHON={} is not a file: run `source scripts/lib.sh && ensure_openai_client`", python.display());
    python
}

#[test]
fn the_official_openai_python_client_calls_both_endpoints_over_https_whole_and_streamed() {
    let python = openai_python();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", MODEL]);
    // With a key configured, as a production daemon runs: the client sends it as its api_key.
    let created: serde_json::Value =
        serde_json::from_str(run_ok(&["keys", "create", "--db", s(&db), "--tenant", "openai-client", "--json"]).trim()).expect("keys create --json");
    let key = created["key"].as_str().expect("the key").to_string();
    run_ok(&["policy", "allow", "--db", s(&db), "--tenant", "openai-client", "--operation", "generate", "--model", "SmolLM2*"]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_hartonomous"))
        .args(["serve", "--db", s(&db), "--listen", "127.0.0.1:0", "--models", MODEL])
        .args(["--context", "512", "--max-sequences", "4", "--lineage", "sync"])
        .env("HARTONOMOUS_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    let mut cert = None;
    let port = loop {
        let line = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the daemon did not say where it listens; it printed:\n{}", lines.join("\n"))
        });
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("certificate ") {
            cert = rest.split(" (").next().map(PathBuf::from);
        }
        if let Some(rest) = line.strip_prefix("listening on https://") {
            let addr = rest.split(';').next().expect("address");
            break addr.rsplit(':').next().expect("port").to_string();
        }
    };
    let cert = cert.unwrap_or_else(|| panic!("no certificate line before `listening on`:\n{}", lines.join("\n")));
    assert!(cert.is_file(), "{} is not a file", cert.display());

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts/openai_client_e2e.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--base-url", &format!("https://localhost:{port}/v1"), "--cert", s(&cert), "--model", MODEL, "--api-key", &key])
        .output()
        .expect("runs the OpenAI client script");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // SIGTERM: the daemon drains (a 30 s grace period) and exits 0.
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = wait_for_exit(&mut child, Duration::from_secs(60));

    assert!(
        out.status.success(),
        "{} {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        python.display(),
        script.display(),
        out.status
    );
    println!("{stdout}");
    let status = status.expect("the daemon was still running 60 s after SIGTERM (killed now)");
    assert!(status.success(), "daemon exit status {status}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("shut down in")), "{}", rest.join("\n"));
}

/// The child's exit status, or `None` (and the child killed) if it is still running after `limit`.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("waits for the daemon") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
