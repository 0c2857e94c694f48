//! What `lake generate [NAME] [--from FILE] [--topic T]` sends, and where:
//! a dataset of the pipeline (its generator or a file of its records, to
//! its topic), or a built-in stream by name whatever the pipeline declares.

use std::path::{Path, PathBuf};

use lake_spec::Pipeline;

use crate::error::{Error, Result};
use crate::generator::Stream;

/// The records to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A built-in generator.
    Stream(Stream),
    /// The lines of a file, keyed by these fields (none: unkeyed).
    File { path: PathBuf, keys: Vec<String> },
}

/// A source and the topic it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub source: Source,
    pub topic: String,
}

/// Resolves a `lake generate` request against `pipeline`. `keyed`: Kafka
/// messages carry the dataset's key fields as their key.
pub fn resolve(
    pipeline: &Pipeline,
    name: Option<&str>,
    from: Option<&Path>,
    topic: Option<&str>,
    keyed: bool,
) -> Result<Resolved> {
    let dataset = match name {
        Some(name) => match pipeline.dataset(name) {
            Ok(spec) => Some(spec.clone()),
            // The built-in streams run whatever the pipeline declares.
            Err(_) if Stream::parse(name).is_some() && from.is_none() => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let source = match from {
        Some(path) => Source::File {
            path: path.to_path_buf(),
            keys: match (&dataset, keyed) {
                (Some(spec), true) => spec.key.clone(),
                _ => Vec::new(),
            },
        },
        None => {
            let name = name.unwrap_or_default();
            Source::Stream(match &dataset {
                Some(spec) => spec
                    .generator
                    .as_deref()
                    .and_then(Stream::parse)
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "dataset `{name}` ({}) names no built-in generator (tweets, \
                             speedtest); feed it from a file with --from FILE",
                            spec.file
                        ))
                    })?,
                None => Stream::parse(name).ok_or_else(|| {
                    Error::Invalid("name a dataset, or give --from FILE and --topic".into())
                })?,
            })
        }
    };
    let topic = match (topic, &dataset, &source) {
        (Some(topic), _, _) => topic.to_string(),
        (None, Some(spec), _) => spec.topic.clone(),
        (None, None, Source::Stream(stream)) => default_topic(stream.to_owned())?,
        (None, None, Source::File { .. }) => {
            return Err(Error::Invalid(
                "--from without a dataset needs --topic (or name the dataset: lake generate \
                 <dataset> --from …)"
                    .into(),
            ));
        }
    };
    Ok(Resolved { source, topic })
}

/// The topic of the shipped dataset a stream feeds.
fn default_topic(stream: Stream) -> Result<String> {
    let built_in = Pipeline::built_in()?;
    Ok(built_in
        .datasets
        .iter()
        .find(|d| d.generator.as_deref() == Some(stream.name()))
        .map_or_else(|| stream.name().to_string(), |d| d.topic.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_streams_and_files_find_their_topics() {
        let pipeline = Pipeline::built_in().expect("built in");
        let tweets = resolve(&pipeline, Some("tweets"), None, None, true).expect("tweets");
        assert_eq!(tweets.source, Source::Stream(Stream::Tweets));
        assert_eq!(tweets.topic, "tweets");

        let file = Path::new("t.jsonl");
        let replay = resolve(&pipeline, Some("speedtest"), Some(file), Some("x"), true)
            .expect("a file of speed tests");
        assert_eq!(
            replay.source,
            Source::File {
                path: file.to_path_buf(),
                keys: vec!["user_id".into(), "timestamp".into()]
            }
        );
        assert_eq!(replay.topic, "x");

        let unnamed =
            resolve(&pipeline, None, Some(file), None, false).expect_err("no topic to go to");
        assert!(unnamed.to_string().contains("needs --topic"), "{unnamed}");
        let unknown =
            resolve(&pipeline, Some("clicks"), None, None, true).expect_err("no such dataset");
        assert!(unknown.to_string().contains("clicks"), "{unknown}");
    }
}
