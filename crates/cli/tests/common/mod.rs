//! Helpers shared by the CLI end-to-end tests: run the built `beacon` binary to completion, or
//! in the background with its stdout lines arriving on a channel.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Runs `beacon --endpoints ENDPOINT --timeout 3s ARGS…` with `stdin`, to completion.
pub fn beacon(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_beacon"))
        .arg("--endpoints")
        .arg(endpoint)
        .args(["--timeout", "3s"])
        .args(args)
        .env_remove("BEACON_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run beacon");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for beacon")
}

/// Runs `beacon`, asserts success and returns stdout.
pub fn ok(endpoint: &str, args: &[&str]) -> String {
    ok_with_stdin(endpoint, args, None)
}

/// [`ok`] with text on stdin.
pub fn ok_with_stdin(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = beacon(endpoint, args, stdin);
    assert!(
        output.status.success(),
        "beacon {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Runs `beacon ARGS… -o json`, asserts success and parses stdout.
pub fn json(endpoint: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&ok(endpoint, &args)).expect("valid json")
}

/// Runs `beacon`, asserts it fails with exit status 1 and returns stderr.
pub fn fails(endpoint: &str, args: &[&str]) -> String {
    let output = beacon(endpoint, args, None);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "beacon {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A `beacon` command running in the background (a watch, a kept-alive registration), its
/// stdout lines arriving on a channel. Killed when dropped.
pub struct BackgroundBeacon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl BackgroundBeacon {
    /// Starts `beacon --endpoints ENDPOINT ARGS…`.
    pub fn start(endpoint: &str, args: &[&str]) -> BackgroundBeacon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_beacon"))
            .arg("--endpoints")
            .arg(endpoint)
            .args(args)
            .env_remove("BEACON_ENDPOINTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run beacon in the background");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        BackgroundBeacon { child, lines }
    }

    /// The next `count` stdout lines, each within 20 s.
    pub fn read_lines(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| self.read_line_within(Duration::from_secs(20)))
            .collect()
    }

    /// The next stdout line, within `limit` (panics otherwise).
    pub fn read_line_within(&self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("a line from beacon within {limit:?}"))
    }

    /// The process id, for signals.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`INT` as Ctrl-C does, `TERM`) and returns the exit status and stderr.
    pub fn signal(mut self, signal: &str) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let status = self.child.wait().expect("wait for beacon");
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("stderr is piped")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        (status, stderr)
    }

    /// Sends SIGINT (as Ctrl-C does) and returns the exit status and stderr.
    pub fn interrupt(self) -> (ExitStatus, String) {
        self.signal("INT")
    }
}

impl Drop for BackgroundBeacon {
    fn drop(&mut self) {
        self.kill();
    }
}
