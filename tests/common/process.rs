//! The broker binary as a child process on free ports, for tests that need a real
//! process (the command line, SIGKILL).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_actormq");

/// `actormq broker` on `data_dir`, killed (SIGKILL) when dropped.
pub struct BrokerProcess {
    child: Child,
    /// `tcp://` address of its native listener, read from its log.
    pub url: String,
    /// What it logged before it was listening (profile, recovery, store, cluster).
    pub startup: Vec<String>,
    /// What it logs after that.
    log: mpsc::Receiver<String>,
}

impl BrokerProcess {
    /// A member named `name` of a shared-file master/slave pair on `dir`.
    pub fn file_pair_member(dir: &Path, name: &str) -> BrokerProcess {
        BrokerProcess::start_with_env(
            dir,
            &[],
            &[
                ("ACTORMQ__HA__MODE", "shared-file"),
                ("ACTORMQ__BROKER__NAME", name),
            ],
        )
    }

    /// A member named `name` of a master/slave pair on the PostgreSQL database at `url`.
    pub fn pg_pair_member(url: &str, name: &str) -> BrokerProcess {
        BrokerProcess::start_with_env(
            &super::data_dir(&format!("pg-member-{name}")),
            &[],
            &[
                ("ACTORMQ__HA__MODE", "database"),
                ("ACTORMQ__STORE__KIND", "postgres"),
                ("ACTORMQ__STORE__URL", url),
                ("ACTORMQ__BROKER__NAME", name),
            ],
        )
    }

    /// Starts the broker with `args` after the listen and data-dir options.
    pub fn start(data_dir: &Path, args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_with_env(data_dir, args, &[])
    }

    /// Starts the broker with settings from `ACTORMQ__SECTION__KEY` variables too, e.g.
    /// `("ACTORMQ__LIMITS__SEND_TIMEOUT_MS", "2000")`.
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> BrokerProcess {
        // Free ports, unless the test names its own address.
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(BIN)
            .arg("broker")
            .args(listen)
            .args(["--stomp-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        // Keeps reading after start-up too, so the broker never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        let url = loop {
            let line = log
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no listen line; saw {startup:?}"));
            // A master/slave broker says first where it stands by (and will serve).
            if let Some(addr) = line
                .split("listening on ")
                .nth(1)
                .filter(|_| !line.contains("STOMP"))
                .or_else(|| line.split("standby on ").nth(1))
            {
                let url = format!(
                    "tcp://{}",
                    addr.split_whitespace().next().expect("an address")
                );
                startup.push(line);
                break url;
            }
            startup.push(line);
        };
        BrokerProcess {
            child,
            url,
            startup,
            log,
        }
    }

    /// The STOMP listener's address.
    pub fn stomp_addr(&self) -> std::net::SocketAddr {
        self.logged_addr("STOMP listening on ")
            .or_else(|| self.logged_addr("(STOMP "))
            .and_then(|a| a.trim_end_matches([')', ':']).parse().ok())
            .expect("the broker logs its STOMP address")
    }

    /// The native listener's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("tcp://")
            .parse()
            .expect("a socket address")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address after `label` in the start-up line that names it (`bridge on `).
    pub fn logged_addr(&self, label: &str) -> Option<String> {
        self.startup.iter().find_map(|line| {
            let after = line.split(label).nth(1)?;
            let addr = after.split([',', ' ']).next()?;
            Some(addr.to_string())
        })
    }

    /// Waits (up to `limit`) for a log line containing `needle`, and returns it.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Its resident memory in bytes, from /proc (Linux).
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends it a signal (`STOP` freezes it, `CONT` wakes it).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills it with SIGKILL and waits for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// A broker process on the memory store, and its resident memory when it started.
pub struct Measured {
    pub broker: BrokerProcess,
    dir: std::path::PathBuf,
    pub before: u64,
}

impl Measured {
    pub fn start(name: &str, env: &[(&str, &str)]) -> Measured {
        let dir = super::data_dir(name);
        let mut env = env.to_vec();
        env.push(("ACTORMQ__STORE__KIND", "memory"));
        let broker = BrokerProcess::start_with_env(&dir, &[], &env);
        let before = broker.resident_bytes().expect("the broker's memory");
        Measured {
            broker,
            dir,
            before,
        }
    }

    /// Resident memory now, above the start.
    pub fn grown(&self) -> u64 {
        self.broker
            .resident_bytes()
            .expect("its memory")
            .saturating_sub(self.before)
    }

    /// Checks that resident memory at `peak` (or now, for `None`) is less than `limit`
    /// above the start.
    pub fn assert_grown_below(&self, peak: Option<u64>, limit: u64) {
        let grown = match peak {
            Some(peak) => peak.saturating_sub(self.before),
            None => self.grown(),
        };
        eprintln!("resident memory grew by {} MiB", grown / MIB);
        assert!(grown < limit, "resident memory grew by {} MiB", grown / MIB);
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
