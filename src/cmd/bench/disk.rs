//! `actormq bench disk`: the floor under a durable round trip. Appends 4 KiB blocks to a
//! preallocated file and `fdatasync`s after each, as a journal does for one message
//! confirmed at a time; the time of each append is what no broker on this disk can beat.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::report::{Summary, micros_histogram};

/// The block appended each time: a page, as a small journal record rounds to.
const BLOCK: usize = 4096;

/// `count` appends of one block with an `fdatasync` each, in a file in `dir` (on the
/// broker's data disk, to measure that disk), removed afterwards.
pub fn run(dir: &Path, count: u64) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("actormq-disk-floor-{}", std::process::id()));
    let result = append(&path, count.max(1));
    let _ = std::fs::remove_file(&path);
    result
}

fn append(path: &Path, count: u64) -> anyhow::Result<Summary> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // Preallocated and synced first, so no append changes the file's size or extents.
    let zeros = vec![0u8; BLOCK];
    for _ in 0..count {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    let block = vec![b'x'; BLOCK];
    let mut appends = micros_histogram();
    let started = Instant::now();
    for i in 0..count {
        let at = Instant::now();
        file.write_all_at(&block, i * BLOCK as u64)?;
        file.sync_data()?;
        let _ = appends.record(at.elapsed().as_micros() as u64);
    }
    Ok(Summary {
        workload: String::new(),
        target: String::new(),
        messages: count,
        bytes: count * BLOCK as u64,
        elapsed: started.elapsed(),
        p50_us: appends.value_at_quantile(0.5),
        p99_us: appends.value_at_quantile(0.99),
        p999_us: appends.value_at_quantile(0.999),
        lost: 0,
        duplicates: 0,
        redelivered: 0,
        longest_pause: Duration::ZERO,
        confirm_us: None,
    })
}
