//! Every fixed number the broker and its client use that is not a setting, each with why,
//! in one place (as nats-server's `const.go`). The settings — limits an operator may change —
//! are `config::Limits` and the other `config` sections. Format constants (magic
//! numbers, protocol versions) stay with the format they define.

use std::time::Duration;

// --- Memory accounting

/// Bytes a message is counted as beyond its body (ids, headers, framing): in the memory
/// budget, in prefetch and backlog bytes, in the send window, and in the journal's
/// compaction arithmetic.
pub const MESSAGE_OVERHEAD: usize = 256;

// --- Sockets (net)

/// Pause after a failed accept (for example when the process is out of file descriptors),
/// so that an accept loop does not spin. Client listeners and the cluster bridge alike.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Room made in a reader's buffer before each read: the most one read adds, and what an
/// idle connection's buffer costs.
pub const READ_BYTES: usize = 8 * 1024;
/// A reader makes room for all of a frame whose length it knows (so a large frame is read
/// into one allocation, not grown and copied as it arrives) once at least 1/this of it
/// has arrived and the partial-frame budget has room: a peer that claims much and sends
/// little still makes the broker hold at most this many times what it sent.
pub const WHOLE_FRAME_AFTER: usize = 16;
/// A native frame's bodies at least this long are not copied out of the frame when it is
/// decoded: they share its buffer, which lives until the last of them is dropped. Shorter
/// ones are copied, so that a small message kept long does not pin a large buffer. Bodies
/// this long are not copied into a frame being written either (native and STOMP): the
/// writer sends them from the message, between the pieces of the frame around them.
pub const SHARED_BODY_BYTES: usize = 64 * 1024;
/// How often a reader paused by a spent partial-frame budget looks again.
pub const BUDGET_RETRY: Duration = Duration::from_millis(50);
/// How long a writer tries to deliver its last frame (the reason) to a peer being dropped.
pub const LAST_WORDS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a writer waits for the socket's shutdown once it stops: the socket may be the
/// very thing that is stuck.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(200);
/// Most frames gathered into one vectored write (Linux takes up to 1,024).
pub const MAX_IOV: usize = 64;

// --- Destinations and the journal

/// Paged messages a queue reads back from the journal at a time.
pub const PAGE_IN_BATCH: usize = 1024;
/// A queue whose page-in failed tries again after this long.
pub const PAGE_IN_RETRY: Duration = Duration::from_secs(1);
/// A queue looks at its waiting sends (to fail those past the send timeout and admit those
/// that now fit) every quarter of the send timeout, but at least this often...
pub const BLOCKED_CHECK_MAX: Duration = Duration::from_millis(500);
/// ...and at most this often.
pub const BLOCKED_CHECK_MIN: Duration = Duration::from_millis(10);
/// How often the journal tries again to write records that failed for want of space.
pub const JOURNAL_RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often the journal works out again which queue holds its oldest segment, for `stat`.
pub const JOURNAL_HOLDER_EVERY: Duration = Duration::from_secs(2);
/// How long closing the journal (at shutdown) waits for its writer to finish.
pub const JOURNAL_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first zero-filled spare segment a journal makes (`store::spare`); each next one is
/// twice as large, up to the segment size. Small, so that a journal holding little writes
/// little: 4 MiB is some 9,000 durable round trips of a 256 B message.
pub const PREALLOCATE_FIRST: u64 = 4 * 1024 * 1024;
/// Spares are made only while fsynced groups are small: below this many bytes each on
/// average. Writing zeros ahead costs about the disk time of the data it precedes, and saves
/// a fixed ~100 µs per fsync (the file's size); at about 16 KiB per fsync they break even.
/// A flood (large groups) writes into growing files at full speed instead.
pub const SPARE_GROUP_BELOW: u64 = 16 * 1024;
/// ...judged over at least this many fsyncs since the segment began.
pub const SPARE_AFTER_SYNCS: u64 = 64;

// --- Queues

/// Most stored messages a queue counts ahead of their delivery in one write (see
/// `QueueActor::count_ahead`): bounds the record and the backlog scanned for it.
pub const COUNT_AHEAD_MAX: usize = 10_000;
/// How far ahead, in prefetches of its consumers: while one write of counts is made,
/// consumers take about a prefetch each, so the counted stretch must be longer than that.
pub const COUNT_AHEAD_PREFETCHES: usize = 4;

// --- Duplicate detection (store::producers)

/// A producer that has stored nothing for this long is forgotten: a send it makes again
/// after that is taken as new. An hour outlasts any failover client's reconnect.
pub const PRODUCER_IDLE: Duration = Duration::from_secs(3600);
/// Producers remembered at most (the one idle longest goes first): ~100 bytes each, plus
/// 8 bytes per send in flight.
pub const MAX_PRODUCERS: usize = 100_000;
/// Sends in flight remembered per producer (the oldest go first). A failover client
/// keeps fewer unconfirmed sends than this (`client::FailoverOptions`).
pub const MAX_SENDS_PER_PRODUCER: usize = 65_536;
/// Sends remembered in all, over every producer (~40 bytes each: some 40 MiB at most);
/// past it the producer idle longest is forgotten.
pub const MAX_REMEMBERED_SENDS: usize = 1_000_000;
/// How often the PostgreSQL store deletes the rows of idle producers.
pub const PRODUCER_SWEEP_EVERY: Duration = Duration::from_secs(60);

// --- Threads

/// How often each arbiter gives the memory it freed back to the OS.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

// --- Cluster

/// How long a bridge handshake may take.
pub const BRIDGE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request to a broker that is up but not linked yet waits this long for the link.
pub const BRIDGE_LINK_WAIT: Duration = Duration::from_secs(3);
/// Redial back-off of a bridge link: the first wait...
pub const BRIDGE_REDIAL_FIRST: Duration = Duration::from_millis(100);
/// ...and the longest.
pub const BRIDGE_REDIAL_MAX: Duration = Duration::from_secs(2);
/// Bridge envelopes may be this much larger than the largest client frame (their routing
/// header).
pub const ENVELOPE_SLACK: usize = 64 * 1024;
/// How often a broker that knows no other member announces itself to its seeds again.
pub const REANNOUNCE: Duration = Duration::from_secs(1);
/// How often a consumer of a destination whose home is away (or a topic mirror) tries to
/// subscribe again.
pub const RESUBSCRIBE: Duration = Duration::from_secs(1);

// --- Client

/// Replies a requestor buffers ahead of its callers (its reply queue's prefetch).
pub const REPLY_PREFETCH: u32 = 10_000;
