//! A real Prometheus (Debian's `prometheus` package) on a free loopback port,
//! scraping its targets every second.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Prometheus {
    /// Scrape `target` (`host:port`, path `/metrics`) every second.
    pub fn start(target: &str) -> Prometheus {
        Self::start_jobs(&[("haproxy", target, "")])
    }

    /// Scrape each `(job, host:port, side)` every second; a non-empty `side`
    /// becomes the label `side` on that target's series.
    pub fn start_jobs(targets: &[(&str, &str, &str)]) -> Prometheus {
        let mut jobs = String::new();
        for (n, (job, target, side)) in targets.iter().enumerate() {
            let labels = if side.is_empty() { String::new() } else { format!("\n        labels: {{ side: {side} }}") };
            jobs.push_str(&format!(
                "  - job_name: {job}-{n}\n    static_configs:\n      - targets: ['{target}']{labels}\n"
            ));
        }
        Self::launch(tempfile::tempdir().unwrap(), &jobs)
    }

    /// No scrapes: the past in `openmetrics` (OpenMetrics text ending in
    /// `# EOF`, timestamps in seconds), written as TSDB blocks by `promtool
    /// tsdb create-blocks-from openmetrics` before the server starts.
    pub fn start_with_history(openmetrics: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("history.om");
        std::fs::write(&input, openmetrics).unwrap();
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(dir.path().join("data"))
            .output()
            .expect("promtool comes with Debian's prometheus package");
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        Self::launch(dir, "  []\n")
    }

    fn launch(dir: tempfile::TempDir, jobs: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed by scripts/test.sh");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = write!(s, "GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut b = String::new();
                let _ = s.read_to_string(&mut b);
                b.starts_with("HTTP/1.1 200")
            });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus { child, _dir: dir, url }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
