//! Real `backstop` processes for crash and replica tests: started with their
//! stderr read line by line (so a test can wait for a pause point), killed
//! with real signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Agent {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

fn drain(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    text
}

impl Agent {
    /// `backstop --config CONFIG watch --ledger LEDGER --pace-ms PACE`, with extra environment.
    pub fn watch(config: &Path, ledger: &str, pace_ms: u64, env: &[(&str, &str)]) -> Agent {
        let bin = assert_cmd::cargo::cargo_bin("backstop");
        let mut cmd = Command::new(bin);
        cmd.env_remove("BACKSTOP_CONFIG").env_remove("BACKSTOP_TEST_PAUSE_AT").env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["--config", config.to_str().unwrap(), "watch", "--plain", "--ledger", ledger]);
        cmd.args(["--pace-ms", &pace_ms.to_string()]);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = drain(child.stderr.take().unwrap());
        let stdout = drain(child.stdout.take().unwrap());
        Agent { child, stderr, stdout }
    }

    /// `backstop ARGS...` with extra environment (for `agent` and other long-running commands).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let bin = assert_cmd::cargo::cargo_bin("backstop");
        let mut cmd = Command::new(bin);
        cmd.env_remove("BACKSTOP_CONFIG").env_remove("BACKSTOP_TEST_PAUSE_AT").env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = drain(child.stderr.take().unwrap());
        let stdout = drain(child.stdout.take().unwrap());
        Agent { child, stderr, stdout }
    }

    /// Wait until stdout contains `needle`; panics after `within` or if the process exits.
    pub fn wait_for_stdout(&mut self, needle: &str, within: Duration) {
        let start = Instant::now();
        while !self.stdout().contains(needle) {
            assert!(
                start.elapsed() < within,
                "no `{needle}` within {within:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                panic!("exited ({status}) before `{needle}`; stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Wait until stderr contains `needle`; panics after `within`.
    pub fn wait_for(&mut self, needle: &str, within: Duration) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(start.elapsed() < within, "no `{needle}` within {within:?}; stderr:\n{}", self.stderr());
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                panic!("exited ({status}) before `{needle}`; stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// SIGKILL: no clean-up of any kind runs.
    pub fn kill9(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Wait for exit (panics after `within`): the exit code, and stdout and stderr.
    pub fn finish(mut self, within: Duration) -> (i32, String, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (status.code().unwrap_or(-1), self.stdout(), self.stderr());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "agent did not finish within {within:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A test that ends (or panics) with its process still running must not
/// leave it behind: it would hold ports, files and CPU for the rest of the run.
impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines of a file (0 when it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}
