//! A real InfluxDB 1.x (Debian's `influxdb` package) on free loopback ports,
//! with a database the test creates and points it writes (line protocol).

use std::process::{Child, Command, Stdio};

pub struct Influx {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl Influx {
    pub fn start() -> Influx {
        let dir = tempfile::tempdir().unwrap();
        let (http, rpc) = (crate::support::haproxy::free_port(), crate::support::haproxy::free_port());
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n[http]\n  bind-address = \"127.0.0.1:{http}\"\n\
             log-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).unwrap();
        let child = Command::new("influxd")
            .arg("-config")
            .arg(dir.path().join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("influxd is installed by scripts/test.sh");
        let url = format!("http://127.0.0.1:{http}");
        crate::support::wait_http(http, "/ping", "HTTP/1.1 204", "influxd");
        Influx { child, _dir: dir, url }
    }

    /// Create `db` and write `lines` (line protocol, timestamps in seconds) to it.
    pub async fn write(&self, db: &str, lines: &str) {
        let c = reqwest::Client::new();
        let r = c.post(format!("{}/query", self.url)).form(&[("q", format!("CREATE DATABASE {db}"))]).send().await;
        assert!(r.unwrap().status().is_success(), "create database");
        let r = c.post(format!("{}/write?db={db}&precision=s", self.url)).body(lines.to_string()).send().await.unwrap();
        assert!(r.status().is_success(), "write: {}", r.status());
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        self.stop();
    }
}
