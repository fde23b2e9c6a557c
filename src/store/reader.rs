//! The journal's reader thread: reads `Enqueue` records back from segment files by
//! location (paging messages in), off the arbiters' threads. A message compaction wrote
//! forward is read from its copy. Files are opened for one request and closed after it,
//! so a segment the writer deletes gives its disk space back at once.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::StoreError;
use super::format;
use super::record::Record;
use super::segments::{Location, Moved, segment_path};
use crate::message::Message;

pub(super) struct Read {
    /// Message ids and where their records start.
    pub wanted: Vec<(u64, Location)>,
    pub done: oneshot::Sender<Result<Vec<Arc<Message>>, StoreError>>,
}

/// Starts the reader; it ends when the journal's last handle goes.
pub(super) fn start(dir: PathBuf, moved: Moved) -> Result<mpsc::Sender<Read>, StoreError> {
    let (reads, rx) = mpsc::channel::<Read>();
    let thread_dir = dir.clone();
    std::thread::Builder::new()
        .name("actormq-journal-reader".into())
        .spawn(move || {
            for mut read in rx {
                if let Ok(moved) = moved.lock() {
                    for (id, at) in &mut read.wanted {
                        if let Some(copy) = moved.get(id) {
                            *at = *copy;
                        }
                    }
                }
                let mut files: HashMap<u64, File> = HashMap::new();
                // A transaction's messages share one record: decode it once per request.
                let mut last: Option<(Location, HashMap<u64, Arc<Message>>)> = None;
                let result = read
                    .wanted
                    .iter()
                    .map(|(id, at)| {
                        if last.as_ref().is_none_or(|(l, _)| l != at) {
                            last = Some((*at, read_record(&thread_dir, &mut files, *at)?));
                        }
                        last.as_mut()
                            .and_then(|(_, messages)| messages.remove(id))
                            .ok_or_else(|| StoreError::Io {
                                path: segment_path(&thread_dir, at.segment),
                                reason: format!(
                                    "no message {id} in the record at offset {}",
                                    at.offset
                                ),
                            })
                    })
                    .collect();
                let _ = read.done.send(result);
            }
        })
        .map_err(|e| StoreError::io(&dir, e))?;
    Ok(reads)
}

/// The messages of the record at `at` (an `Enqueue`, or a transaction's), by id.
fn read_record(
    dir: &std::path::Path,
    files: &mut HashMap<u64, File>,
    at: Location,
) -> Result<HashMap<u64, Arc<Message>>, StoreError> {
    let path = segment_path(dir, at.segment);
    let file = match files.entry(at.segment) {
        std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(File::open(&path).map_err(|e| StoreError::io(&path, e))?)
        }
    };
    let mut header = [0u8; format::HEADER_BYTES];
    file.read_exact_at(&mut header, at.offset)
        .map_err(|e| StoreError::io(&path, e))?;
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if header[..4] != format::MAGIC || len > format::MAX_RECORD_BYTES {
        return Err(StoreError::Io {
            path,
            reason: format!("no record at offset {}", at.offset),
        });
    }
    let mut whole = header.to_vec();
    whole.resize(format::HEADER_BYTES + len, 0);
    file.read_exact_at(
        &mut whole[format::HEADER_BYTES..],
        at.offset + format::HEADER_BYTES as u64,
    )
    .map_err(|e| StoreError::io(&path, e))?;
    Ok(format::decode_all(&whole)
        .records
        .into_iter()
        .flat_map(|(_, record)| record.flatten())
        .filter_map(|record| match record {
            Record::Enqueue { id, message, .. } => Some((id, message)),
            _ => None,
        })
        .collect())
}
