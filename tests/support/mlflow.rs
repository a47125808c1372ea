//! A real MLflow tracking server (`mlflow server`, from PyPI in the venv the
//! test script makes under `target/`) on a free loopback port, with a SQLite
//! backend store in a temporary folder, and its REST API for setting up
//! registered models.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// `mlflow`: `MLFLOW_BIN`, else the venv `scripts/test.sh` makes.
fn mlflow_bin() -> PathBuf {
    let p = std::env::var("MLFLOW_BIN").map(PathBuf::from).unwrap_or_else(|_| "target/py-mlflow/bin/mlflow".into());
    assert!(p.exists(), "{} is missing: run scripts/test.sh, which installs mlflow into target/py-mlflow", p.display());
    p
}

pub struct Mlflow {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
}

impl Mlflow {
    pub async fn start() -> Mlflow {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut m = Mlflow { child: None, dir, port, url: format!("http://127.0.0.1:{port}") };
        m.launch().await;
        m
    }

    /// Start the server on this folder's store (again, after `stop`).
    pub async fn launch(&mut self) {
        let store = format!("sqlite:///{}", self.dir.path().join("mlflow.db").display());
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(mlflow_bin())
            .args(["server", "--backend-store-uri", &store, "--host", "127.0.0.1", "--workers", "1"])
            .arg("--default-artifact-root")
            .arg(self.dir.path().join("artifacts"))
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so stopping it stops its workers too.
            .process_group(0)
            .spawn()
            .expect("mlflow runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        while reqwest::get(format!("{}/health", self.url)).await.map(|r| r.status().is_success()).ok() != Some(true) {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "mlflow server did not answer /health:\n{log}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop the server and its workers.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", c.id())]).status();
            let _ = c.wait();
        }
    }

    /// POST to the REST API; the JSON answer, whatever the status.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/api/2.0/mlflow/{path}", self.url);
        reqwest::Client::new().post(url).json(&body).send().await.unwrap().json().await.unwrap()
    }

    /// The version `alias` of `model` names now.
    pub async fn alias(&self, model: &str, alias: &str) -> String {
        let url = format!("{}/api/2.0/mlflow/registered-models/alias", self.url);
        let v: Value = reqwest::Client::new()
            .get(url)
            .query(&[("name", model), ("alias", alias)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["model_version"]["version"].as_str().unwrap_or_else(|| panic!("no alias: {v}")).to_string()
    }

    /// A registered model with `versions` versions and `alias` on the last.
    pub async fn register(&self, model: &str, versions: u32, alias: &str) {
        self.post("registered-models/create", json!({ "name": model })).await;
        for v in 1..=versions {
            let source = format!("s3://models/{model}/v{v}");
            let r = self.post("model-versions/create", json!({ "name": model, "source": source })).await;
            assert_eq!(r["model_version"]["version"], v.to_string(), "{r}");
        }
        let r = self
            .post("registered-models/alias", json!({ "name": model, "alias": alias, "version": versions.to_string() }))
            .await;
        assert_eq!(r, json!({}), "{r}");
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        self.stop();
    }
}
