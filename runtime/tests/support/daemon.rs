//! A daemon started in the test's process over HTTPS, with a reqwest client that trusts its
//! generated certificate and calls it by the name the certificate holds (`localhost`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hartonomous_runtime::pager::WeightsSource;
use hartonomous_runtime::search::VectorStorage;
use hartonomous_runtime::serve::{self, LineageMode, ServeOptions, ShutdownReport};
use hartonomous_runtime::store::Store;
use serde_json::Value;
use tokio::sync::oneshot;

/// What the serving tests start from: every ready model in the store, on a free loopback port,
/// HTTPS with a certificate generated under `data_dir`, lineage stored before each answer, two
/// sequences of 128 tokens, the search index in f32.
pub fn options(data_dir: PathBuf) -> ServeOptions {
    ServeOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        insecure_http: false,
        data_dir,
        gpu_memory: None,
        models: Vec::new(),
        weights_source: WeightsSource::Atoms,
        lineage: LineageMode::Sync,
        max_batch_tokens: 8192,
        queue_capacity: 64,
        max_sequences: 2,
        context: 128,
        search_storage: VectorStorage::F32,
        search_memory: 1 << 30,
        governance_refresh: Duration::from_secs(5),
    }
}

pub struct TestDaemon {
    pub base: String,
    pub client: reqwest::Client,
    /// The daemon's certificate (PEM), for clients other than `client` to trust.
    pub certificate: Vec<u8>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<ShutdownReport>>,
}

impl TestDaemon {
    pub async fn start(store: Arc<dyn Store>, options: ServeOptions) -> Self {
        let daemon = serve::start(store, options).await.expect("daemon starts");
        let pem = std::fs::read(&daemon.tls.clone().expect("HTTPS").cert).expect("certificate");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
            .https_only(true)
            .build()
            .expect("client");
        let base = format!("https://localhost:{}", daemon.addr.port());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            daemon
                .run(
                    async {
                        let _ = rx.await;
                    },
                    Duration::from_secs(30),
                )
                .await
                .expect("clean shutdown")
        });
        TestDaemon { base, client, certificate: pem, shutdown: Some(tx), task: Some(task) }
    }

    /// POSTs `body` as JSON; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    }

    /// POSTs and asserts a 200.
    pub async fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert_eq!(status, 200, "{path} {body}: {answer}");
        answer
    }

    /// POSTs and asserts `status` with OpenAI's error `param` naming `field`.
    pub async fn refused(&self, path: &str, body: Value, status: u16, field: &str) {
        let (got, answer) = self.post(path, &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{body}: {answer}");
    }

    pub async fn stop(mut self) -> ShutdownReport {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running").await.expect("daemon task")
    }
}
