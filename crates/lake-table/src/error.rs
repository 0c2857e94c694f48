//! The error type of `lake-table`.

use iceberg::TableIdent;
use iceberg::table::Table;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong writing to or committing an Iceberg table.
///
/// The conflict variants carry the table as it is now, so a caller (an ingest
/// zombie, a compaction group) can decide what to do without another load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The commit's precondition no longer holds: the table is not at the
    /// snapshot the caller built on, or concurrent data landed where this commit
    /// replaces data. Nothing was committed.
    #[error("commit to {table} refused: {reason}")]
    Conflict {
        table: TableIdent,
        reason: String,
        current: Box<Table>,
    },

    /// A file this commit removes is no longer live (another commit already
    /// replaced or deleted it). Nothing was committed.
    #[error("commit to {table} refused: {path} is no longer live")]
    FileNotLive {
        table: TableIdent,
        path: String,
        current: Box<Table>,
    },

    /// Every attempt lost a race with another writer.
    #[error("commit to {table} gave up after {attempts} attempts lost to concurrent commits")]
    TooManyConflicts { table: TableIdent, attempts: u32 },

    /// The catalog failed in a way that leaves open whether the commit landed,
    /// and reloading could not tell either.
    #[error("commit to {table} may or may not have landed: {message}")]
    CommitStateUnknown { table: TableIdent, message: String },

    /// The catalog answered with an error that is not a conflict.
    #[error("catalog: {0}")]
    Catalog(String),

    /// The request cannot work on this table (unsupported format version,
    /// a batch that does not fit the schema, …).
    #[error("{0}")]
    Invalid(String),

    /// A declaration asks for a schema the table cannot take (a changed type,
    /// a new `not null` field, …). Nothing was written.
    #[error("{0}")]
    SchemaChange(String),

    /// A broken invariant inside lake: a bug, not something a user gave.
    #[error("internal error (a bug in lake): {0}")]
    Internal(String),

    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),

    #[error(transparent)]
    Core(#[from] lake_core::Error),

    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),

    #[error("storage: {0}")]
    Storage(#[from] opendal::Error),

    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl Error {
    /// True for the refusals a caller may resolve by reloading and rebuilding.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::FileNotLive { .. } | Error::TooManyConflicts { .. }
        )
    }

    /// True when a commit may or may not have landed: the one failure after
    /// which retrying blindly could write the same data twice.
    pub fn is_commit_state_unknown(&self) -> bool {
        matches!(self, Error::CommitStateUnknown { .. })
    }

    /// True when the catalog or the storage was unreachable or failed on
    /// its side (connection refused or reset, a timeout, a 5xx): an outage
    /// that may end by itself, unlike a request that is wrong (4xx, a schema
    /// refusal). A commit whose outcome is unknown counts: it is what a
    /// catalog dying mid-request leaves.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::CommitStateUnknown { .. } => true,
            Error::Storage(e) => e.is_temporary() || outage_in_chain(e),
            Error::Iceberg(e) => outage_in_chain(e),
            Error::Core(e) => outage_in_chain(e),
            _ => false,
        }
    }

    /// The table as it is now, when the error carries it.
    pub fn current_table(&self) -> Option<&Table> {
        match self {
            Error::Conflict { current, .. } | Error::FileNotLive { current, .. } => Some(current),
            _ => None,
        }
    }
}

/// True when `error` or any of its sources is a transport failure or a
/// server-side one: reqwest failing to connect, send or hear back, an I/O
/// error of a dropped connection, a temporary storage error (OpenDAL marks
/// connection failures and 5xx so), or the REST client's "unexpected
/// status" carrying a 5xx.
pub fn outage_in_chain(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(e) = error.downcast_ref::<reqwest::Error>() {
            if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
                return true;
            }
            if e.status().is_some_and(|s| s.is_server_error()) {
                return true;
            }
        }
        if let Some(e) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                e.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(e) = error.downcast_ref::<opendal::Error>()
            && e.is_temporary()
        {
            return true;
        }
        if let Some(e) = error.downcast_ref::<iceberg::Error>()
            && server_status(&e.to_string())
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// An outage's cause in plain words: "nothing answers at http://host:port",
/// "http://host:port answered 503 Service Unavailable", "no answer from … in
/// time (to /v1/…)", or the error's own text when nothing plainer is found.
pub fn describe_outage(error: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<reqwest::Error>() {
            let at = e.url().map_or_else(
                || "the catalog".to_string(),
                |url| {
                    format!(
                        "{}://{}:{}",
                        url.scheme(),
                        url.host_str().unwrap_or_default(),
                        url.port_or_known_default().unwrap_or_default()
                    )
                },
            );
            if e.is_connect() {
                return format!("nothing answers at {at} (connection refused or unreachable)");
            }
            if e.is_timeout() {
                // The path says which call hung: a catalog that answers its
                // configuration but not a table's load is a different fault
                // from one that answers nothing.
                return match e.url() {
                    Some(url) => format!("no answer from {at} in time (to {})", url.path()),
                    None => format!("no answer from {at} in time"),
                };
            }
            if let Some(status) = e.status() {
                return format!("{at} answered {status}");
            }
            return format!("the connection to {at} failed mid-request");
        }
        if let Some(e) = e.downcast_ref::<Error>()
            && let Error::CommitStateUnknown { .. } = e
        {
            return e.to_string();
        }
        next = e.source();
    }
    error.to_string()
}

/// Whether an iceberg REST error's text carries a 5xx status: the client
/// keeps the status only in its context (`status: 503 Service Unavailable`).
fn server_status(text: &str) -> bool {
    text.match_indices("status: ").any(|(at, key)| {
        let code = &text[at + key.len()..];
        code.len() >= 3 && code.starts_with('5') && code[..3].bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_5xx_in_the_rest_clients_context_is_an_outage() {
        let e = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Received response with unexpected status code",
        )
        .with_context("status", "503 Service Unavailable");
        assert!(Error::Iceberg(e).is_outage());
        let e = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Received response with unexpected status code",
        )
        .with_context("status", "403 Forbidden");
        assert!(!Error::Iceberg(e).is_outage());
    }

    #[test]
    fn a_refused_connection_under_iceberg_is_an_outage() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Failed to execute http request",
        )
        .with_source(io);
        assert!(Error::Iceberg(e).is_outage());
        assert!(!Error::Catalog("403 Forbidden".into()).is_outage());
        assert!(!Error::Invalid("bad".into()).is_outage());
    }
}
