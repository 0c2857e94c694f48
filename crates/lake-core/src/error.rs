//! The error type of `lake-core`.

/// Result alias used across `lake-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading configuration or reaching the
/// catalog and storage. Callers branch on the variant; the message is for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid or incomplete. The message names the key.
    #[error("configuration: {0}")]
    Config(String),

    /// The catalog could not be reached, refused the credentials, or answered
    /// something unexpected.
    #[error("catalog at {uri}: {message}")]
    Catalog { uri: String, message: String },

    /// An error from the Iceberg library.
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),

    /// An object store or filesystem error.
    #[error("storage: {0}")]
    Storage(#[from] opendal::Error),
}

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    pub fn catalog(uri: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Catalog {
            uri: uri.into(),
            message: message.into(),
        }
    }

    pub(crate) fn from_figment(error: figment::Error) -> Self {
        // Figment folds every problem into one error; its Display lists them
        // all with the key path and the source (file or variable) that set it.
        let all: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        Error::Config(all.join("; "))
    }
}
