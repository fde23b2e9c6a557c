//! # actormq
//!
//! A message broker built on actix actors: JMS-style queues and topics over a native
//! MessagePack protocol, with an async Rust client. This page is the project's map; keep it
//! true as the code moves.
//!
//! ## The actor tree
//!
//! ```text
//! actix System (main thread)
//! ├── broker::node::serve ─ the broker's life: alone, or (with `[ha]`) standby → master →
//! │                         standby; a standby's listeners refuse clients (broker::standby)
//! ├── listener tasks ─ (broker) native and STOMP: accept, set TCP_NODELAY, hand each
//! │                   socket to the next arbiter
//! ├── DestinationRegistry ─ name → DestinationRef; creates destinations on first use;
//! │                         in a cluster asks `Homes` (the cluster's placement) where each
//! │                         lives
//! ├── Membership ─ (cluster) foca SWIM over UDP: the member table, up/down notices
//! ├── bridge tasks ─ (cluster) accept and dial links; per link: reader + HomeSide
//! │                  (cluster::home, serves the peer's requests), writer task, heartbeat
//! ├── RemoteConsumer ─ (cluster) one per consumer of a peer on a destination here:
//! │                    Dispatch → envelopes back to the peer
//! └── ArbiterPool: one Arbiter (thread) per core but one (at least one)
//!     ├── ConnectionActor ─ (frontend::native) one per native socket: FrameReader
//!     │   │                 (FrameCodec, send window, frame deadline) reads; handshake,
//!     │   │                 sessions
//!     │   ├── writer task ─ the one bounded writer of this socket (FrameSink → batches)
//!     │   └── SessionActor<NativeWire> ─ (session) one per client session: sends, acks,
//!     │       │                          consumers
//!     │       └── ConsumerActor<NativeWire> ─ (session) one per subscription: Dispatch →
//!     │                                       Deliver
//!     ├── StompConnectionActor ─ (frontend::stomp) one per STOMP socket: FrameReader
//!     │   │                      (StompCodec) reads; SENDs batched until nothing more
//!     │   │                      is ready (MarkIdle); transactions, receipts, heart-beats
//!     │   ├── writer task
//!     │   └── SessionActor<StompWire> ─ the connection's one session
//!     │       └── ConsumerActor<StompWire> ─ encodes MESSAGEs onto the writer itself (the
//!     │                                      subscription table is shared with the
//!     │                                      connection); settles ack:auto once written
//!     ├── QueueActor ─ placed by hash of its name: backlog, competing consumers, credit
//!     ├── TopicActor ─ placed by hash of its name: subscribers, per-subscriber backlog
//!     ├── RemoteDestination ─ (cluster) placed by hash of its name, one per destination
//!     │                       homed elsewhere: the proxy a DestinationRef points at;
//!     │                       Enqueue/Subscribe/Control → envelopes on the bridge
//!     └── TopicMirror ─ (cluster) a topic homed elsewhere, as local subscribers see it: a
//!                       local TopicActor fed by one subscription to the home topic
//! journal threads (std::thread) ─ the Journal's writer (group commit, segments, LOCK,
//!                                  retried removals, compaction), reader (paging in), and
//!                                  while fsynced groups are small, a spare-maker (the next
//!                                  segment's file of zeros, store::spare)
//! postgres thread (std::thread + a current-thread tokio runtime) ─ (store::postgres) the
//!                                  PostgresStore's writer and reader connections
//! keeper thread (std::thread) ─ (ha) a master's lock: checks the lock file or renews the
//!                                lease every ha.keep_alive_ms; closes the fence when it fails
//! ```
//!
//! A connection and its sessions and consumers live on one arbiter; a destination lives
//! on the arbiter its name hashes to, so one hot queue stays on one core and many queues
//! use them all. Actors talk only by typed messages; nothing blocks inside an actor.
//! Every arbiter gives freed memory back to the OS every few seconds
//! ([`runtime::set_memory_trim`]).
//!
//! ## What bounds memory
//!
//! On the way in, a connection's [`net::reader::FrameReader`] stops reading while the sends
//! it read wait for room ([`net::reader::SendWindow`]: producer flow control reaches the
//! producer's TCP window), buffers only bytes that arrived (against one broker-wide
//! [`net::reader::ReadBudget`]), and drops a frame that does not finish in time. In the middle,
//! queues count their messages against [`destination::MemoryBudget`]. On the way out, each
//! consumer has a prefetch in messages and in bytes and paces itself to its connection's
//! [`net::writer::FrameSink`]; a topic drops a subscriber whose backlog passes its limits.
//! Every limit is in [`config::Limits`]; every fixed number in [`constants`].
//!
//! ## The layers
//!
//! Each module imports only modules below it (`../shared/tools/module-circles src` finds
//! no circle, between folders or inside one):
//!
//! ```text
//! broker ─ composes: store, arbiters, registry, cluster, one listener per front-end;
//! │        node (standby ⇄ master), standby (refusing clients)
//! frontend::{native, stomp} ─ sockets and a protocol, mapped onto sessions; neither knows
//! │                           the other
//! cluster ─ membership, the bridge, placement; implements destination::Homes
//! ha ─ the master's lock (file or lease), its epoch and keeper; implements store::Fence
//! session ─ SessionActor, ConsumerActor, ClientWire (what a front-end implements),
//! │         Resends (the producers' sends this broker kept)
//! destination ─ queues, topics, the registry, DestinationRef, Homes (what a cluster is
//! │             to the registry)
//! store ─ the Store trait, the Fence it writes behind, the journal and its on-disk
//! │       format, the PostgreSQL store, the memory store
//! client ─ the native client (protocol, net): URLs, the driver that reconnects
//! protocol ─ native frames, protocol::stomp; pure codecs, no I/O
//! net ─ the bounded socket reader and writer
//! stats, config, constants, message, runtime ─ data and settings, below everything
//! ```
//!
//! ## The flow of one message
//!
//! 1. [`client::Producer::send`] encodes a `Send` frame (a batch of messages, with a receipt
//!    id) and queues it on the connection's [`net::writer::FrameSink`].
//! 2. [`frontend::native::ConnectionActor`] decodes it ([`protocol::FrameCodec`] in a
//!    [`net::reader::FrameReader`]), counts its bytes in the connection's send window until
//!    it is answered, and passes it to the frame's [`session::SessionActor`].
//! 3. The session resolves the destination through the registry (once, then cached) to a
//!    [`destination::DestinationRef`] and sends it [`destination::Enqueue`]; when that is
//!    answered it writes `Receipt`, which resolves the producer's future.
//! 4. A persistent message bound for a queue is appended to the [`store::Journal`] first;
//!    the enqueue (and so the receipt) is answered once its group of appends is fsynced.
//!    When a consumer is waiting with credit for it (and nothing is queued ahead), the
//!    queue delivers it while it is written and answers once it is fsynced or acknowledged,
//!    whichever comes first (concurrent store and dispatch, `[store]`); a failover
//!    producer's marked send and a transaction are always written first.
//!    [`destination::QueueActor`] dispatches to consumers with credit (their prefetch),
//!    in batches, keeping each delivery in that consumer's in-flight set;
//!    [`destination::TopicActor`] copies the `Arc` of the message to every subscriber's
//!    backlog and drains each as its credit allows.
//! 5. [`session::ConsumerActor`] writes a `Deliver` frame (a body of 64 KiB or more is not
//!    copied into it: the writer sends it from the message itself,
//!    [`protocol::encode_frame_spliced`]); the client's driver task routes it to the
//!    [`client::Consumer`]. When the application takes it, the client acknowledges
//!    (in batches); the ack returns credit and removes the message from the in-flight set
//!    (a STOMP `ack:auto` consumer settles instead once the writer says the MESSAGE is
//!    written). A consumer that goes away leaves its in-flight messages to be redelivered.
//!    A stored message's delivery count is stored before it leaves the queue, so after a
//!    crash or a takeover it comes again marked redelivered, with its count.
//!
//! ## The same message through a failover
//!
//! With a `failover:(…)` URL the client's driver task owns the socket
//! ([`client::Connection`]): every send carries its producer's id and sequence number
//! ([`protocol::SendOrigin`]); the broker's [`session::Resends`] keeps each once, and the
//! queue stores the producer's mark in the same journal record as the messages
//! (`Record::Sent`, or a row of `actormq_sends`). When the socket is lost the driver tries
//! the list, and under the connection's lock replays its state onto the new socket:
//! sessions, subscriptions, unconfirmed sends (the new master confirms those it recovered
//! without storing them again), and for a commit in doubt a `Resolve` question. Deliveries
//! and acknowledgements of the old socket never cross to the new one.
//!
//! ## The same message through a cluster
//!
//! A producer on `node2` sends to `queue:orders.eu`, homed on `node1` (by a placement rule or
//! rendezvous hashing); a consumer is connected to `node3`.
//!
//! 1. `node2`'s registry resolves the name through [`cluster::Placement`] to a remote
//!    `DestinationRef` whose recipients are a [`cluster::RemoteDestination`].
//! 2. That proxy turns `Enqueue` into a `destination.enqueue` envelope on the bridge link to
//!    `node1` (in order; it waits with `ctx.wait` if the link is not up yet or is full), and
//!    answers the session when the `reply` envelope comes back — for a persistent message,
//!    after `node1`'s journal has it.
//! 3. On `node1` the link's `HomeSide` asks the registry for the local queue
//!    ([`destination::ResolveHome`]) and sends it the same `Enqueue` a local session would.
//! 4. `node3`'s consumer subscribes the same way: `destination.subscribe` with its prefetch;
//!    `node1` starts a `RemoteConsumer` as the queue's sink, whose `Dispatch`es travel back
//!    as `consumer.deliver` envelopes to the `ConsumerActor` on `node3`. Settlements travel
//!    to `node1` as `destination.control`, returning credit: flow control is the queue's own.
//! 5. If the link drops, `node1` unsubscribes `node3`'s consumers (their unacknowledged
//!    messages go to other consumers), requests waiting on the link fail with
//!    `DestinationUnavailable { home: node1 }`, and `node3`'s proxy subscribes its
//!    consumers again, every second, until `node1` is back.
//!
//! ## Where the code differs from the starting map
//!
//! (The starting map is `ARCHITECTURE.md` in the project's shared folder, outside this
//! repository; where they differ, this page is right.)
//!
//! - The in-flight set lives in the destination, not in `ConsumerActor`: the destination is
//!   the actor that redelivers, so it owns what it may have to redeliver, and a consumer
//!   that dies needs to send nothing but "unsubscribe".
//! - A `DestinationRef` is a set of typed `Recipient`s rather than an enum of addresses:
//!   the cluster's proxy actors (`RemoteDestination`, `TopicMirror`) plug in without any
//!   change to sessions or consumers.
//! - Session and consumer actors are generic over a `ClientWire` (how they reach their
//!   client), so the STOMP front-end reuses them instead of mapping STOMP onto native
//!   frames.
//! - Temporary destinations, composite destinations (`queue:a,topic:b`) and configured
//!   groups are resolved by the registry; wildcard topics (`prices.>`) are subscription
//!   points the registry wires to every topic they match, which forward what they publish.
//!   A durable subscription is a queue (`durable:<client>/<name>@<topic>`) its topic forwards
//!   to, so it is stored, recovered and redelivered like any queue.
//! - The store is a `Store` trait object (`Journal`, `PostgresStore` or `MemoryStore`)
//!   held by the registry, queues and sessions, not an actor: the journal's writer and
//!   reader are plain threads (the PostgreSQL store's, one thread with its own runtime),
//!   so no fsync, query or read ever runs on an arbiter. A queue past half its memory limit keeps
//!   new stored messages as journal locations only (paging) and reads them back in batches.
//! - Producer flow control lives in the queue: a send that does not fit its memory limit
//!   (or the broker's, a `MemoryBudget` counter shared by all queues) is parked and answered
//!   when room is made, so the producer's receipt waits; no separate flow-control actor.
//! - Transactions are held by the client and committed in one `Commit` frame, which the
//!   session turns into one journal record; the broker keeps no open-transaction state.
//! - Cluster: `Membership` is an actor around `foca` (a state machine; the actor owns the
//!   UDP socket and foca's timers), but the bridge is tasks and shared tables rather than one
//!   actor: a link's reader serves its peer's requests in order, and the registry, proxies
//!   and remote consumers write to a link's `FrameSink` directly, so no message funnels
//!   through a single bridge mailbox. A pair of brokers shares one link (the smaller name
//!   dials). Topics have a home like queues: a publish goes to the topic's home; another
//!   broker's subscribers share one subscription to it through a `TopicMirror` (a local
//!   `TopicActor` fed from the home), so a message crosses to each broker once, and only
//!   while it has subscribers.
//! - Journal records have a versioned on-disk format of their own (`store::format`), read
//!   back in every version written so far; golden journals in `tests/fixtures/` hold it to
//!   that.
//! - Master/slave is a loop around the broker, not a state inside it: `broker::node` runs
//!   a standby (listeners bound, clients refused) until the lock is taken, then starts a
//!   whole broker behind the lock's fence, and stops it when the lock is lost. The store
//!   knows only the [`store::Fence`] (may I write, in which epoch); the lock knows nothing
//!   of actors. Journal segments carry the epoch they were written in; the PostgreSQL
//!   store checks its lease row in every group commit's transaction.
//!
//! ## Where each part lives
//!
//! | module | owns |
//! |---|---|
//! | [`message`] | `Message`, `Destination` (kept in its written form), `Property`, `AckMode`; `decimal`, numbers as text without `core::fmt` |
//! | [`stats`] | the counters `stat` reports (destinations, store, members) |
//! | [`config`] | settings, profiles, validation, and every limit with its default |
//! | [`constants`] | every fixed number that is not a setting, with why |
//! | [`runtime`] | the arbiter pool and the memory-trim hook |
//! | [`net`] | the bounded socket writer (broker and client) and the bounded frame reader of a client connection (send window, partial-frame budget, frame deadline) |
//! | [`protocol`] | native frames and the length-prefixed MessagePack codec (`Send` and `Deliver` read and written by hand, `hot_frames`; the rest by `rmp_serde`); [`protocol::stomp`], STOMP frames (header values in one text per frame) and codec (no I/O) |
//! | [`store`] | the `Store` trait and the `Fence` it writes behind; `ProducerWindows` (producers' stored sends, bounded); the journal (versioned record and segment format, group-committing writer with retries and compaction, zero-filled spare segments, reader, recovery), the PostgreSQL store (schema, group commit fenced by the lease) and the memory store |
//! | [`ha`] | master/slave: the file lock and the database lease, epochs, the keeper that checks the lock and closes the fence, `Mastership` |
//! | [`destination`] | queue and topic actors, the registry, `DestinationRef`, `Homes` |
//! | [`session`] | session and consumer actors, `ClientWire`, `Resends` (duplicate detection of producers' sends) |
//! | [`frontend`] | `Services` (what every connection is given: registry, settings, read budget, `Resends`); [`frontend::native`] (`ConnectionActor`, `NativeWire`) and [`frontend::stomp`] (`StompConnectionActor`, its subscriptions and `StompWire`) |
//! | [`cluster`] | membership (foca) and the member table, the bridge (links) and what a link serves (`home`), the envelope codec, placement, remote destinations and topic mirrors; implements `Homes` |
//! | [`broker`] | broker start-up: store, arbiters, registry, cluster, listeners; `node::serve` (a lone broker, or the standby ⇄ master loop) and the standby's refusals |
//! | [`client`] | `Connection` (plain or `failover:`, reconnecting and replaying its state), `Session`, `Producer`, `Consumer`, `Requestor`, `Responder` |

pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod constants;
pub mod destination;
pub mod frontend;
pub mod ha;
pub mod message;
pub mod net;
pub mod protocol;
pub mod runtime;
pub mod session;
pub mod stats;
pub mod store;

pub use broker::{Broker, BrokerError, BrokerThread};
pub use config::{Config, ConfigError, ConfigSources, Limits};
pub use message::{AckMode, Destination, Message, Property};
