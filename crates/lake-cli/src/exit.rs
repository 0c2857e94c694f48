//! The process's exit status: what a scheduler or script can tell from it
//! without reading the message (docs/operations.md lists them).

use std::process::ExitCode;

/// The command line or the configuration is wrong; running again as it
/// stands fails again. clap uses the same code for the errors it reports.
pub const USAGE: u8 = 2;

/// A commit's outcome is unknown: the catalog failed after the request was
/// sent and could not be asked afterwards. The table must be looked at
/// before the step is retried (ingest's retry is safe: it resumes from the
/// offsets the table holds).
pub const COMMIT_STATE_UNKNOWN: u8 = 3;

/// The exit status for a failed command: [`COMMIT_STATE_UNKNOWN`] or
/// [`USAGE`] when the error's chain says so, else 1.
pub fn for_error(error: &anyhow::Error) -> ExitCode {
    if error
        .chain()
        .any(|link| table_error(link).is_some_and(lake_table::Error::is_commit_state_unknown))
    {
        return ExitCode::from(COMMIT_STATE_UNKNOWN);
    }
    if error.chain().any(is_usage) {
        return ExitCode::from(USAGE);
    }
    ExitCode::FAILURE
}

/// The message for a failed command, on one line as the library crates
/// word it. When the catalog or the storage was out, the client library's
/// wording ("Unexpected => Failed to execute http request, …") says little,
/// so the plain cause comes first, with that wording after it for whoever
/// debugs the connection; a message that already gives the cause (ingest's
/// "gave up after …") stands alone.
pub fn message(error: &anyhow::Error) -> String {
    let full = format!("{error:#}");
    let chain: &(dyn std::error::Error + 'static) = error.as_ref();
    if !lake_table::error::outage_in_chain(chain) {
        return full;
    }
    let cause = lake_table::error::describe_outage(chain);
    if full.contains(&cause) {
        full
    } else {
        format!("{cause}\n  ({full})")
    }
}

/// Whether writing to standard output failed because its reader closed it.
/// Rust ignores SIGPIPE, so the write returns EPIPE instead of ending the
/// process as it would a C program.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|link| {
        link.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The table error in one link of a chain. The library crates wrap it
/// transparently (their link shows its message and skips it as a source), so
/// it is found through their `Table` variants as well as on its own.
fn table_error<'a>(link: &'a (dyn std::error::Error + 'static)) -> Option<&'a lake_table::Error> {
    if let Some(error) = link.downcast_ref::<lake_table::Error>() {
        return Some(error);
    }
    match link.downcast_ref::<lake_ingest::Error>() {
        Some(lake_ingest::Error::Table(error)) => return Some(error),
        Some(_) => return None,
        None => {}
    }
    if let Some(lake_transform::Error::Table(error)) = link.downcast_ref::<lake_transform::Error>()
    {
        return Some(error);
    }
    if let Some(lake_maintain::Error::Table(error)) = link.downcast_ref::<lake_maintain::Error>() {
        return Some(error);
    }
    if let Some(lake_query::Error::Table(error)) = link.downcast_ref::<lake_query::Error>() {
        return Some(error);
    }
    None
}

/// Errors in what the user declared: the configuration and the pipeline's
/// dataset files.
fn is_usage(link: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        link.downcast_ref::<lake_core::Error>(),
        Some(lake_core::Error::Config(_))
    ) || link.is::<lake_spec::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown() -> lake_table::Error {
        lake_table::Error::CommitStateUnknown {
            table: iceberg::TableIdent::from_strs(["bronze", "tweets_raw"]).unwrap(),
            message: "and reloading failed: connection refused".into(),
        }
    }

    #[test]
    fn an_unknown_commit_outcome_has_its_own_code_however_it_is_wrapped() {
        let expected = ExitCode::from(COMMIT_STATE_UNKNOWN);
        let direct = anyhow::Error::from(unknown());
        assert_eq!(for_error(&direct), expected);
        let ingest = anyhow::Error::from(lake_ingest::Error::from(unknown()));
        assert_eq!(for_error(&ingest), expected);
        let transform = anyhow::Error::from(lake_transform::Error::from(unknown()))
            .context("building silver.tweets_clean");
        assert_eq!(for_error(&transform), expected);
        let maintain = anyhow::Error::from(lake_maintain::Error::from(unknown()));
        assert_eq!(for_error(&maintain), expected);
    }

    #[test]
    fn configuration_errors_are_usage_and_the_rest_are_failures() {
        let config = anyhow::Error::from(lake_core::Error::config("catalog.uri is not a URL"));
        assert_eq!(for_error(&config), ExitCode::from(USAGE));
        let conflict = anyhow::Error::from(lake_table::Error::TooManyConflicts {
            table: iceberg::TableIdent::from_strs(["silver", "tweets_clean"]).unwrap(),
            attempts: 10,
        });
        assert_eq!(for_error(&conflict), ExitCode::FAILURE);
        let kafka = anyhow::Error::from(lake_ingest::Error::Kafka("no broker answered".into()));
        assert_eq!(for_error(&kafka), ExitCode::FAILURE);
    }
}
