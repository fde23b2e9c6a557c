//! A small disk for tests that fill one: a tmpfs of a given size, mounted in a user and
//! mount namespace of its own (`unshare`, from util-linux), so no privilege is needed and
//! nothing is mounted on the machine. A process in the namespace holds it; the test and the
//! broker reach it from outside through `/proc/<pid>/root`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct SmallDisk {
    holder: Child,
    /// The mount point on this machine (empty outside the namespace).
    mount: PathBuf,
    /// The mounted folder, as seen from outside the namespace.
    pub path: PathBuf,
}

impl SmallDisk {
    /// A tmpfs of `bytes`. Fails the test, saying why, if the machine cannot make one.
    pub fn new(bytes: u64) -> SmallDisk {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mount =
            std::env::temp_dir().join(format!("actormq-small-disk-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&mount).expect("a mount point");
        let script = format!(
            "mount -t tmpfs -o size={bytes} tmpfs '{}' && echo ready && exec sleep 100000",
            mount.display()
        );
        let mut holder = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test makes a small disk with `unshare` (util-linux), which cannot run here: {e}")
            });
        let mut line = String::new();
        let ready = holder
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line).is_ok() && line.trim() == "ready")
            .unwrap_or(false);
        if !ready {
            let _ = holder.kill();
            let output = holder.wait_with_output().ok();
            let stderr = output
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!(
                "this test needs a small tmpfs in a user and mount namespace (`unshare --user --map-root-user --mount`), which this machine refused: {stderr}"
            );
        }
        let path = PathBuf::from(format!("/proc/{}/root", holder.id())).join(
            mount
                .strip_prefix("/")
                .expect("the temporary folder is absolute"),
        );
        SmallDisk {
            holder,
            mount,
            path,
        }
    }

    /// Fills `bytes` of the disk with a file that [`SmallDisk::free_ballast`] removes.
    pub fn ballast(&self, bytes: usize) {
        std::fs::write(self.path.join("ballast"), vec![0u8; bytes]).expect("room for ballast");
    }

    /// Fills what is left of the disk, to the last byte, with a file
    /// [`SmallDisk::free_ballast`] removes too.
    pub fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join("filler")).expect("a filler file");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        for size in [512, 64, 8, 1] {
            while file.write_all(&chunk[..size]).is_ok() {}
        }
    }

    pub fn free_ballast(&self) {
        std::fs::remove_file(self.path.join("ballast")).expect("the ballast file");
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir(&self.mount);
    }
}
