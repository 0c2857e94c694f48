//! Storage access: Iceberg `FileIO` for table files, and an OpenDAL
//! `Operator` for what FileIO does not offer (listing a location, probing it).
//!
//! Both are built from the same [`StorageConfig`], so a writer, the catalog
//! server and the maintenance commands always agree on endpoint and keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::io::{FileIO, FileIOBuilder, StorageFactory};
use opendal::Operator;

use crate::config::StorageConfig;
use crate::error::{Error, Result};

mod write_behind;
pub use write_behind::{WriteBehind, WriteBehindFactory, WriteBehindStorage};

/// The storage backends compiled into lake: `file://` and `s3://`, with
/// file writers that upload behind the code writing them
/// ([`WriteBehindStorage`]).
pub fn storage_factory() -> Arc<dyn StorageFactory> {
    Arc::new(WriteBehindFactory::default())
}

/// An Iceberg FileIO for any location the configuration can reach.
pub fn file_io(storage: &StorageConfig) -> FileIO {
    FileIOBuilder::new(storage_factory())
        .with_props(storage.file_io_properties())
        .build()
}

/// A storage location, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An absolute local path.
    File(PathBuf),
    /// A bucket and a key prefix (no leading slash, possibly empty).
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parses `s3://bucket/prefix`, `file:///abs/path`, or a plain path
    /// (made absolute against the working directory).
    pub fn parse(location: &str) -> Result<Self> {
        if let Some(rest) = location
            .strip_prefix("s3://")
            .or_else(|| location.strip_prefix("s3a://"))
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::config(format!(
                    "`{location}` names no bucket; write s3://bucket/prefix"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = location.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::config(format!(
                    "`{location}` is not an absolute file URL; write file:///absolute/path \
                     or a plain path"
                )));
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        if location.contains("://") {
            return Err(Error::config(format!(
                "`{location}`: only s3:// and file:// locations (or plain paths) are supported"
            )));
        }
        Ok(Location::File(absolute(Path::new(location))?))
    }

    /// The canonical URL form: `s3://bucket/prefix` or `file:///abs/path`.
    pub fn to_url(&self) -> String {
        match self {
            Location::File(path) => format!("file://{}", path.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// An operator rooted at this location, so paths below it are relative.
    pub fn operator(&self, storage: &StorageConfig) -> Result<Operator> {
        match self {
            Location::File(path) => {
                let root = path.to_string_lossy();
                Ok(Operator::new(opendal::services::Fs::default().root(&root))?.finish())
            }
            Location::S3 { bucket, prefix } => {
                let s3 = &storage.s3;
                let mut builder = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"));
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.endpoint(endpoint);
                }
                let region = s3
                    .region
                    .as_deref()
                    .or(s3.endpoint.as_ref().map(|_| "us-east-1"));
                if let Some(region) = region {
                    builder = builder.region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.secret_access_key(secret.expose());
                }
                if s3.access_key_id.is_some() {
                    // Explicit keys: do not wait on an instance-metadata
                    // endpoint that does not exist outside a cloud VM.
                    builder = builder.disable_ec2_metadata().disable_config_load();
                }
                if !s3.path_style_access {
                    builder = builder.enable_virtual_host_style();
                }
                Ok(Operator::new(builder)?.finish())
            }
        }
    }
}

/// Checks that `location` can be listed with these settings, so a wrong
/// endpoint, key or bucket fails at start with its own message instead of at
/// the first commit.
pub async fn probe(storage: &StorageConfig, location: &Location) -> Result<()> {
    if let Location::File(path) = location {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::config(format!(
                "cannot create warehouse directory {}: {e}",
                path.display()
            ))
        })?;
    }
    let op = location.operator(storage)?;
    op.list_with("/").limit(1).await.map_err(|e| {
        Error::config(format!(
            "warehouse {} is not reachable: {e}",
            location.to_url()
        ))
    })?;
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::config(format!("cannot resolve path {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_with_and_without_prefix() {
        assert_eq!(
            Location::parse("s3://bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap().to_url(),
            "s3://bucket"
        );
        assert!(Location::parse("s3:///nobucket").is_err());
    }

    #[test]
    fn plain_paths_become_absolute_file_urls() {
        let url = Location::parse("lake-data/warehouse").unwrap().to_url();
        assert!(url.starts_with("file:///"), "{url}");
        assert!(url.ends_with("/lake-data/warehouse"), "{url}");
        assert_eq!(
            Location::parse("file:///srv/wh").unwrap(),
            Location::File("/srv/wh".into())
        );
        assert!(Location::parse("file://relative").is_err());
        assert!(Location::parse("gs://bucket").is_err());
    }

    #[tokio::test]
    async fn probe_creates_and_lists_a_local_warehouse() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("wh"));
        probe(&StorageConfig::default(), &location).await.unwrap();
        assert!(dir.path().join("wh").is_dir());
    }
}
