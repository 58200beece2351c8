//! A daemon started in the test's process over HTTPS, with a reqwest client that trusts its
//! generated certificate and calls it by the name the certificate holds (`localhost`).

use std::sync::Arc;
use std::time::Duration;

use hartonomous_runtime::serve::{self, ServeOptions, ShutdownReport};
use hartonomous_runtime::store::Store;
use serde_json::Value;
use tokio::sync::oneshot;

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
