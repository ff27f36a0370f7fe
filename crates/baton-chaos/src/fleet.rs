//! The workers, each a host of its own (its own `HOME` and `CLAUDE_CONFIG_DIR`), and what the run
//! does to them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What every process of the run is told: where the services are, and the stream.
#[derive(Clone)]
pub struct Setting {
    pub dir: PathBuf,
    pub redis_url: String,
    pub database_url: String,
    pub latency_ms: u64,
}

impl Setting {
    /// A command for one of the workspace's binaries, configured for the run.
    pub fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(claude_emulator::sibling_binary(binary));
        cmd.env("REDIS_URL", &self.redis_url)
            .env("DATABASE_URL", &self.database_url)
            .env("BATON_STREAM", "chaos:builds")
            .env("BATON_GROUP", "chaos-workers")
            .env("BATON_WORKSPACE_ROOT", self.dir.join("workspace"))
            .env("BATON_CLAUDE_BIN", claude_emulator::binary())
            .env("CLAUDE_EMULATOR_LOG", self.emulator_log())
            .env("CLAUDE_EMULATOR_LATENCY_MS", self.latency_ms.to_string())
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_METRICS_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null());
        cmd
    }

    /// One JSON line per CLI run, from every host.
    pub fn emulator_log(&self) -> PathBuf {
        self.dir.join("emulator-runs.jsonl")
    }
}

/// One worker replica.
pub struct Worker {
    pub host: String,
    pub redis_url: String,
    child: Option<Child>,
    pub stopped: bool,
    starts: u32,
}

impl Worker {
    pub fn new(host: String, redis_url: String) -> Worker {
        Worker {
            host,
            redis_url,
            child: None,
            stopped: false,
            starts: 0,
        }
    }

    /// Starts (or starts again) the worker on its host, with its folders kept as a restarted pod
    /// keeps its volume.
    pub fn start(&mut self, setting: &Setting) -> anyhow::Result<()> {
        let home = setting.dir.join("hosts").join(&self.host);
        std::fs::create_dir_all(&home)?;
        let log = std::fs::File::create(log_path(&setting.dir, &self.host, self.starts))?;
        self.starts += 1;
        let child = setting
            .command("baton-worker")
            .env("HOME", &home)
            .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
            .env("REDIS_URL", &self.redis_url)
            // Short timings, so that faults show and heal within minutes.
            .env("BATON_HEARTBEAT", "0.5")
            .env("BATON_CLAIM_IDLE", "3")
            .env("BATON_RETRY_MIN_DELAY", "0.1")
            .env("BATON_RETRY_MAX_DELAY", "1")
            .env("BATON_SHUTDOWN_GRACE", "2")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// `kill -9`: the worker dies mid-whatever; its children go with it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&mut self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
            self.stopped = signal == Signal::SIGSTOP;
        }
    }

    /// A clean stop (SIGTERM), waited for.
    pub fn stop(&mut self) {
        if self.stopped {
            self.signal(Signal::SIGCONT);
        }
        self.signal(Signal::SIGTERM);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

fn log_path(dir: &Path, host: &str, start: u32) -> PathBuf {
    dir.join(format!("worker-{host}-{start}.log"))
}
