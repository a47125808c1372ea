//! A throwaway PostgreSQL server (Debian's `postgresql` package): initdb in a
//! temporary folder, started on a free loopback port, stopped on drop. As
//! root, the server runs as the `postgres` user, since PostgreSQL refuses root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PgServer {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL server not installed: scripts/test.sh installs Debian's `postgresql`")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

impl PgServer {
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let status = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).status()
        } else {
            Command::new(&exe).args(args).status()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(status.success(), "{tool} {args:?} failed: {status}");
    }

    pub fn start() -> PgServer {
        Self::start_with(None)
    }

    /// A server that also accepts TLS, with the certificate and key at `tls`
    /// (`server.pem`, `server.key` in that folder).
    pub fn start_tls(tls: &Path) -> PgServer {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&Path>) -> PgServer {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(st.success(), "chown failed");
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.path().join("data");
        let server = PgServer { data: data.clone(), bin, as_postgres, port, _dir: dir };
        let d = data.to_str().unwrap();
        server.run("initdb", &["-D", d, "-U", "backstop", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        let sock = data.parent().unwrap_or(Path::new("/tmp")).to_str().unwrap().to_string();
        let mut opts = format!("-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200");
        if let Some(tls) = tls {
            // The key must belong to the server's user and be private to it.
            let (cert, key) = (data.parent().unwrap().join("server.pem"), data.parent().unwrap().join("server.key"));
            std::fs::copy(tls.join("server.pem"), &cert).unwrap();
            std::fs::copy(tls.join("server.key"), &key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            if as_postgres {
                let st = Command::new("chown").args(["postgres:postgres"]).arg(&cert).arg(&key).status().unwrap();
                assert!(st.success(), "chown failed");
            }
            opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display()));
        }
        let log = data.parent().unwrap().join("log").to_str().unwrap().to_string();
        server.run("pg_ctl", &["-D", d, "-o", &opts, "-l", &log, "-w", "-t", "60", "start"]);
        server
    }

    /// A URL for `db` at `host` (`localhost` or `127.0.0.1`) with `params`, for TLS tests.
    pub fn url_at(&self, host: &str, db: &str, params: &str) -> String {
        format!("postgres://backstop@{host}:{}/{db}?{params}", self.port)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://backstop@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let d = self.data.to_str().unwrap_or_default().to_string();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let _ = cmd.args(["-D", &d, "-m", "immediate", "stop"]).status();
    }
}

impl PgServer {
    /// A fresh, empty database on this server.
    pub async fn fresh_database_url(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&self.url("postgres")).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
        admin.close().await;
        self.url(&name)
    }
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A test certificate authority and a server certificate it signed for
/// `localhost` only (openssl, from Debian), in a new folder: `ca.pem`,
/// `server.pem`, `server.key`.
pub fn make_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(d).args(args).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=backstop test CA"],
        ]
        .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(d.join("ext.cnf"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    dir
}
