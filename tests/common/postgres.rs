//! A private PostgreSQL server for one test: `initdb` in a temporary folder, `postgres` on
//! a free loopback port, stopped (immediate shutdown) when dropped. PostgreSQL comes from
//! Debian's packages (`scripts/test.sh` installs them when missing); without it the test
//! fails and says so. As root, the server runs as the `postgres` user the package creates
//! (PostgreSQL refuses to run as root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

/// The folder with `initdb` and `postgres`: the newest of Debian's, or the one on PATH.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match on_path.and_then(|p| p.parent().map(Path::to_path_buf)) {
        Some(bin) => bin,
        None => panic!(
            "PostgreSQL is not installed: the tests need its server (scripts/test.sh installs \
             it from Debian's packages: apt-get install postgresql)"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` with `args`, as the `postgres` user when this runs as root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
            ])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start(name: &str) -> Postgres {
        let bin = bin_dir();
        let dir = super::data_dir(&format!("pg-{name}"));
        let data = dir.join("data");
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(
                chown.success(),
                "cannot give {} to the postgres user",
                dir.display()
            );
        }
        let data_arg = data.to_str().expect("a UTF-8 path");
        let initdb = command(
            &bin.join("initdb"),
            &[
                "-D",
                data_arg,
                "-U",
                "actormq",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let port_arg = port.to_string();
        let socket_dir = dir.to_str().expect("a UTF-8 path");
        let child = command(
            &bin.join("postgres"),
            &[
                "-D",
                data_arg,
                "-p",
                &port_arg,
                "-k",
                socket_dir,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=40",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts");
        let server = Postgres { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port_arg, "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The connection string of its `postgres` database.
    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// The same database through another port (a proxy in front of it).
    pub fn url_via(&self, port: u16) -> String {
        format!("postgres://actormq@127.0.0.1:{port}/postgres")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster takes its backends with it.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
