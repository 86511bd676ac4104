//! `tapedeck proxy` as a child process, for end-to-end tests: started on free ports,
//! stopped by signal, killed if a test fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::upstream::{http, Upstream};
use super::{s, tapedeck};

/// A running `tapedeck proxy` child and the addresses it printed; killed if still
/// running when dropped, so a failing test leaves no process behind.
pub struct ProxyProcess {
    pub child: KillOnDrop,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    stderr: mpsc::Receiver<String>,
    /// Lines said before the address (a sink's first complaint can come that early).
    early: Vec<String>,
}

impl ProxyProcess {
    pub fn spawn(args: &[&str], limit_file_size: Option<u64>) -> ProxyProcess {
        let mut cmd = tapedeck();
        cmd.arg("proxy").args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some(limit) = limit_file_size {
            super::limit_file_size(&mut cmd, limit);
        }
        let mut child = KillOnDrop(cmd.spawn().expect("tapedeck proxy starts"));
        let (tx, rx) = mpsc::channel();
        let stderr = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut early = Vec::new();
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the proxy reports its address");
            if let Some(rest) = line.strip_prefix("tapedeck proxy: listening on ") {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                let admin =
                    rest.split("metrics at http://").nth(1).and_then(|a| a.trim_end_matches("/metrics").parse().ok());
                return ProxyProcess { child, addr, admin, stderr: rx, early };
            }
            early.push(line);
        }
    }

    /// A proxy in front of `upstream` capturing into `caps`, admin on a free port.
    pub fn capturing(
        upstream: &Upstream,
        caps: &std::path::Path,
        extra: &[&str],
        limit_file_size: Option<u64>,
    ) -> ProxyProcess {
        let url = upstream.url();
        let mut args =
            vec!["--listen", "127.0.0.1:0", "--upstream", &url, "--capture-dir", s(caps), "--admin", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        ProxyProcess::spawn(&args, limit_file_size)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.0.id() as i32, sig) }, 0);
    }

    pub fn metrics(&self) -> String {
        let (_, body) = http(self.admin.expect("admin enabled"), "GET", "/metrics", b"").unwrap();
        String::from_utf8(body).unwrap()
    }

    pub fn wait(mut self, limit: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                let lines = std::mem::take(&mut self.early).into_iter().chain(self.stderr.try_iter()).collect();
                return (status.code().unwrap_or(-1), lines);
            }
            assert!(Instant::now() < deadline, "the proxy did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
