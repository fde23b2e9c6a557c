//! The PostgreSQL store's tables, created on first start (or by `actormq db init`) and
//! versioned, and the connection every user of the database opens through [`connect`],
//! with errors that say what is wrong: unreachable, credentials refused, no such database,
//! another schema version.
//!
//! Version 2 (version 1 lacked `actormq_sends` and `actormq_messages.deliveries`; a
//! database of version 1 is brought up to version 2 when a broker of this build starts on
//! it):
//!
//! | table | holds |
//! |---|---|
//! | `actormq_schema` | the schema version (one row) |
//! | `actormq_lease` | the master's lease (one row): epoch, holder, `expires_at` on the database's clock |
//! | `actormq_epochs` | one row per epoch: who became the master, when (the lease's history) |
//! | `actormq_messages` | one row per stored queue message: id, queue, priority, the journal record (`store::format`, versioned), and how often it was delivered |
//! | `actormq_files` | small named files (the list of durable subscriptions) |
//! | `actormq_sends` | producers' stored sends they may send again (`store::producers`): producer, seq, when |

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// The schema version this build creates and uses.
pub const SCHEMA_VERSION: i32 = 2;

/// The table of producers' stored sends (new in version 2).
const SENDS_TABLE: &str = "CREATE TABLE actormq_sends (
     producer text NOT NULL,
     seq bigint NOT NULL,
     at_ms bigint NOT NULL,
     PRIMARY KEY (producer, seq))";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    #[error("store.url is not a PostgreSQL connection string: {0}")]
    Url(String),
    #[error("cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("PostgreSQL at {target} refused the credentials: {reason}")]
    Credentials { target: String, reason: String },
    #[error("PostgreSQL at {target}: {reason}")]
    NoDatabase { target: String, reason: String },
    #[error(
        "the database at {target} holds actormq schema version {found}; this build uses version {SCHEMA_VERSION}"
    )]
    SchemaVersion { target: String, found: i32 },
    #[error("PostgreSQL: {0}")]
    Query(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        PgError::Query(match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })
    }
}

/// `user@host:port/db` of a connection string, without its password.
pub fn describe(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "(an unreadable URL)".into();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

/// Connects (within 5 s) and drives the connection on the current runtime.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("actormq");
    let target = describe(url);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| PgError::Unreachable {
            target: target.clone(),
            reason: format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
        })?;
    let (client, connection) = connected.map_err(|e| classify(&target, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

fn classify(target: &str, e: tokio_postgres::Error) -> PgError {
    let target = target.to_string();
    match e.as_db_error() {
        Some(db)
            if *db.code() == SqlState::INVALID_PASSWORD
                || *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            PgError::Credentials {
                target,
                reason: db.message().to_string(),
            }
        }
        Some(db) if *db.code() == SqlState::INVALID_CATALOG_NAME => PgError::NoDatabase {
            target,
            reason: db.message().to_string(),
        },
        Some(db) => PgError::Query(db.message().to_string()),
        None => PgError::Unreachable {
            target,
            reason: e.to_string(),
        },
    }
}

/// What [`init`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// The tables were there, of this version.
    Ready,
    /// There were none: created.
    Created,
    /// They were of the older version `from`: brought up to this one.
    Upgraded { from: i32 },
}

/// Creates the tables if the database has none, brings an older version up to this one,
/// or checks their version. Safe to run from several brokers at once (one transaction
/// under an advisory lock).
pub async fn init(client: &mut Client, url: &str) -> Result<Schema, PgError> {
    let tx = client.transaction().await?;
    // Any constant will do, as long as every actormq uses the same.
    tx.execute("SELECT pg_advisory_xact_lock(7670)", &[])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS actormq_schema (version integer NOT NULL)")
        .await?;
    let found: Option<i32> = tx
        .query_opt("SELECT version FROM actormq_schema", &[])
        .await?
        .map(|row| row.get(0));
    let done = match found {
        Some(SCHEMA_VERSION) => Schema::Ready,
        Some(1) => {
            tx.batch_execute(&format!(
                "{SENDS_TABLE};
                 ALTER TABLE actormq_messages ADD COLUMN deliveries integer NOT NULL DEFAULT 0;
                 UPDATE actormq_schema SET version = {SCHEMA_VERSION};"
            ))
            .await?;
            tracing::info!(
                "brought actormq schema version 1 up to {SCHEMA_VERSION} in {}",
                describe(url)
            );
            Schema::Upgraded { from: 1 }
        }
        Some(found) => {
            return Err(PgError::SchemaVersion {
                target: describe(url),
                found,
            });
        }
        None => {
            tx.batch_execute(&format!(
                "CREATE TABLE actormq_lease (
                     id integer PRIMARY KEY CHECK (id = 1),
                     epoch bigint NOT NULL,
                     holder text, pid integer, host text,
                     since timestamptz, expires_at timestamptz);
                 INSERT INTO actormq_lease (id, epoch) VALUES (1, 0);
                 CREATE TABLE actormq_epochs (
                     epoch bigint PRIMARY KEY,
                     holder text NOT NULL, pid integer, host text,
                     started_at timestamptz NOT NULL);
                 CREATE TABLE actormq_messages (
                     id bigint PRIMARY KEY,
                     queue text NOT NULL,
                     priority smallint NOT NULL,
                     record bytea NOT NULL,
                     deliveries integer NOT NULL DEFAULT 0);
                 CREATE TABLE actormq_files (
                     name text PRIMARY KEY,
                     contents bytea NOT NULL);
                 {SENDS_TABLE};
                 INSERT INTO actormq_schema (version) VALUES ({SCHEMA_VERSION});"
            ))
            .await?;
            tracing::info!(
                "created actormq schema version {SCHEMA_VERSION} in {}",
                describe(url)
            );
            Schema::Created
        }
    };
    tx.commit().await?;
    Ok(done)
}
