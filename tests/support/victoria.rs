//! A real single-node VictoriaMetrics (Debian's `victoria-metrics` package)
//! on a free loopback port, with data the test writes through its import API.

use std::process::{Child, Command, Stdio};

pub struct Victoria {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Victoria {
    pub fn start() -> Victoria {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::haproxy::free_port();
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.path().join("data").display()))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics is installed by scripts/test.sh");
        let url = format!("http://127.0.0.1:{port}");
        crate::support::wait_http(port, "/health", "HTTP/1.1 200", "victoria-metrics");
        Victoria { child, _dir: dir, url }
    }

    /// Write `text` (Prometheus exposition lines, timestamps in milliseconds)
    /// and make it searchable at once.
    pub async fn import(&self, text: &str) {
        let c = reqwest::Client::new();
        let r = c.post(format!("{}/api/v1/import/prometheus", self.url)).body(text.to_string()).send().await.unwrap();
        assert!(r.status().is_success(), "import: {}", r.status());
        let r = c.get(format!("{}/internal/force_flush", self.url)).send().await.unwrap();
        assert!(r.status().is_success(), "force_flush: {}", r.status());
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.stop();
    }
}
