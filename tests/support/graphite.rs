//! A real Graphite from Debian's packages on free loopback ports:
//! `carbon-cache` (graphite-carbon) taking points over its plaintext
//! protocol into whisper files, and graphite-web serving the render API
//! (Django's server, settings in a temporary module), both in a temporary folder.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Graphite {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    line_port: u16,
    pub url: String,
}

/// Ten-second points kept for two days, averaged; no point needed per bucket.
const SCHEMAS: &str = "[all]\npattern = .*\nretentions = 10s:2d\n";
const AGGREGATION: &str = "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n";

impl Graphite {
    pub fn start() -> Graphite {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for sub in ["conf", "storage/whisper", "log", "py"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let port = crate::support::haproxy::free_port;
        let (line_port, pickle, query, web) = (port(), port(), port(), port());
        let carbon = format!(
            "[cache]\nSTORAGE_DIR = {d}/storage\nLOCAL_DATA_DIR = {d}/storage/whisper\nWHITELISTS_DIR = {d}/storage/lists\n\
             CONF_DIR = {d}/conf\nLOG_DIR = {d}/log\nPID_DIR = {d}/storage\nENABLE_LOGROTATION = False\nUSER =\n\
             MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = 100000\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line_port}\nENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {pickle}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {query}\n"
        );
        std::fs::write(dir.path().join("conf/carbon.conf"), carbon).unwrap();
        std::fs::write(dir.path().join("conf/storage-schemas.conf"), SCHEMAS).unwrap();
        std::fs::write(dir.path().join("conf/storage-aggregation.conf"), AGGREGATION).unwrap();
        // graphite-web reads recent points from carbon's cache as well as from whisper.
        let web_settings = format!(
            "SECRET_KEY = 'backstop-test-only'\nSTORAGE_DIR = '{d}/storage'\nWHISPER_DIR = '{d}/storage/whisper'\n\
             LOG_DIR = '{d}/log'\nINDEX_FILE = '{d}/storage/index'\nCARBONLINK_HOSTS = ['127.0.0.1:{query}']\n\
             TAGDB = ''\nDATABASES = {{'default': {{'NAME': '{d}/storage/graphite.db', 'ENGINE': 'django.db.backends.sqlite3'}}}}\n"
        );
        std::fs::write(dir.path().join("py/backstop_graphite.py"), web_settings).unwrap();
        let carbon = Command::new("carbon-cache")
            .args([format!("--config={d}/conf/carbon.conf").as_str(), "--nodaemon", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("carbon-cache (graphite-carbon) is installed by scripts/test.sh");
        let manage = |args: &[&str]| {
            let mut c = Command::new("graphite-manage");
            c.args(args).env("PYTHONPATH", format!("{d}/py")).env("GRAPHITE_SETTINGS_MODULE", "backstop_graphite");
            c
        };
        let migrated = manage(&["migrate", "--run-syncdb", "-v0"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(migrated.expect("graphite-manage (graphite-web) is installed by scripts/test.sh").success());
        let web_child = manage(&["runserver", &format!("127.0.0.1:{web}"), "--noreload"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let g = Graphite {
            children: vec![carbon, web_child],
            _dir: dir,
            line_port,
            url: format!("http://127.0.0.1:{web}"),
        };
        crate::support::wait_http(web, "/version", "HTTP/1", "graphite-web");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", line_port)).is_err() {
            assert!(Instant::now() < deadline, "carbon-cache did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }

    /// Send `(path, value, unix seconds)` points over carbon's plaintext
    /// protocol, then wait until graphite-web serves the last of each path.
    pub async fn write(&self, points: &[(String, f64, i64)]) {
        let mut text = String::new();
        for (path, v, t) in points {
            text.push_str(&format!("{path} {v} {t}\n"));
        }
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.line_port)).unwrap();
        conn.write_all(text.as_bytes()).unwrap();
        drop(conn);
        let mut last = std::collections::BTreeMap::new();
        for (path, _, t) in points {
            let e = last.entry(path.clone()).or_insert(*t);
            *e = (*e).max(*t);
        }
        let c = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for (path, t) in last {
            loop {
                let params = [
                    ("target", path.clone()),
                    ("from", (t - 1).to_string()),
                    ("until", t.to_string()),
                    ("format", "json".into()),
                ];
                let body: serde_json::Value = match c.get(format!("{}/render", self.url)).query(&params).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
                if body[0]["datapoints"].as_array().is_some_and(|p| p.iter().any(|p| p[0].is_number())) {
                    break;
                }
                assert!(Instant::now() < deadline, "graphite never served {path} at {t}: {body}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Graphite {
    fn drop(&mut self) {
        self.stop();
    }
}
