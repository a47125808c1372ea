//! A real HAProxy (Debian's `haproxy` package) on loopback ports the test
//! chooses, with its Runtime API on a Unix socket and a TCP socket.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    pub unix_socket: PathBuf,
    pub tcp_socket: String,
    /// Port of HAProxy's Prometheus exporter (`/metrics`).
    pub metrics_port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Haproxy {
    /// Backend `be` with servers `stable` (weight 100) and `canary` (weight 10) on unused ports.
    pub fn start() -> Haproxy {
        Self::start_in_front_of(free_port(), free_port(), free_port())
    }

    /// The same, in front of real servers, with the frontend on `fe`.
    pub fn start_in_front_of(s1: u16, s2: u16, fe: u16) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let unix_socket = dir.path().join("admin.sock");
        let (api, metrics) = (free_port(), free_port());
        let cfg = format!(
            "global\n  stats socket {sock} mode 600 level admin\n  stats socket ipv4@127.0.0.1:{api} level admin\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend fe\n  bind 127.0.0.1:{fe}\n  default_backend be\n\
             frontend metrics\n  bind 127.0.0.1:{metrics}\n  http-request use-service prometheus-exporter if {{ path /metrics }}\n\
             backend be\n  balance roundrobin\n  server stable 127.0.0.1:{s1} weight 100\n  server canary 127.0.0.1:{s2} weight 10\n",
            sock = unix_socket.display()
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is installed by scripts/test.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(unix_socket.exists() && std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()) {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy { child, _dir: dir, unix_socket, tcp_socket: format!("127.0.0.1:{api}"), metrics_port: metrics }
    }

    /// Stop HAProxy: its sockets go away.
    /// `get weight be/<server>` on the Runtime API: the server's current weight.
    pub fn weight(&self, server: &str) -> u32 {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.unix_socket).unwrap();
        s.write_all(format!("get weight be/{server}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
