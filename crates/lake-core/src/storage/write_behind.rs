//! Storage whose file writers hand each write to a task of their own.
//!
//! Iceberg's Parquet writer writes a file one finished row group at a time
//! and waits for each write; OpenDAL's S3 writer turns each write after the
//! first into a multipart part and uploads it before the write returns. So
//! a writer encoding row groups stood still for every part's upload. Behind
//! this storage, a write only queues its bytes: the upload of one row group
//! overlaps the encoding of the next, in the order written, and `close`
//! returns once every queued write and the file's completion are done (as
//! Iceberg's Java `S3FileIO` uploads a stream's parts in the background). The
//! first failure of a queued write is what the next `write` or `close`
//! returns, unchanged, so callers see the storage's own error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{ErrorKind, Result};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Writes queued beyond the one being written: one row group waits while
/// the one before it uploads, so a writer holds at most one more row group
/// than without the queue, and never runs further ahead than that.
const QUEUED_WRITES: usize = 1;

/// Builds [`WriteBehindStorage`] over OpenDAL's storage for every scheme.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WriteBehindFactory {
    inner: OpenDalResolvingStorageFactory,
}

#[typetag::serde(name = "LakeWriteBehindFactory")]
impl StorageFactory for WriteBehindFactory {
    fn build(&self, config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(WriteBehindStorage {
            inner: self.inner.build(config)?,
        }))
    }
}

/// Another storage, whose writers write behind their callers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteBehindStorage {
    #[serde(with = "shared_storage")]
    inner: Arc<dyn Storage>,
}

/// Serde for a shared storage, through the boxed form Iceberg registers.
mod shared_storage {
    use std::sync::Arc;

    use iceberg::io::Storage;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        storage: &Arc<dyn Storage>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        storage.as_ref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<dyn Storage>, D::Error> {
        Box::<dyn Storage>::deserialize(deserializer).map(Arc::from)
    }
}

#[async_trait::async_trait]
#[typetag::serde(name = "LakeWriteBehindStorage")]
impl Storage for WriteBehindStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        self.inner.exists(path).await
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        self.inner.metadata(path).await
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        self.inner.read(path).await
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        self.inner.reader(path).await
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        self.inner.write(path, bs).await
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(WriteBehind::new(self.inner.writer(path).await?)))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path).await
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        self.inner.delete_prefix(path).await
    }

    async fn delete_stream(&self, paths: BoxStream<'static, String>) -> Result<()> {
        self.inner.delete_stream(paths).await
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        self.inner.new_input(path)
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        // The output file must come back here for its writer.
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// The inner writer after every queued write, and the time they took.
type Drained = (Box<dyn FileWrite>, Duration);

/// A file writer whose writes run on a task of their own, in order.
pub struct WriteBehind {
    queue: Option<mpsc::Sender<Bytes>>,
    /// Ends with the inner writer and the time its writes took once the
    /// queue is closed and drained, or with the first write's error.
    task: Option<JoinHandle<Result<Drained>>>,
    /// How long callers' writes waited for room in the queue.
    waited: Duration,
}

impl WriteBehind {
    /// Must be called inside a Tokio runtime, which runs the writes.
    pub fn new(mut inner: Box<dyn FileWrite>) -> Self {
        let (queue, mut queued) = mpsc::channel::<Bytes>(QUEUED_WRITES);
        let task = tokio::spawn(async move {
            let mut writing = Duration::ZERO;
            while let Some(bytes) = queued.recv().await {
                let started = Instant::now();
                inner.write(bytes).await?;
                writing += started.elapsed();
            }
            Ok((inner, writing))
        });
        Self {
            queue: Some(queue),
            task: Some(task),
            waited: Duration::ZERO,
        }
    }

    /// Waits for the task: the inner writer after every queued write, or
    /// the first write's error.
    async fn drain(&mut self) -> Result<Drained> {
        self.queue = None;
        let task = self
            .task
            .take()
            .ok_or_else(|| unexpected("the file was closed already or its write failed"))?;
        match task.await {
            Ok(result) => result,
            Err(e) => Err(unexpected("a file's write task failed").with_source(e)),
        }
    }
}

#[async_trait::async_trait]
impl FileWrite for WriteBehind {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let Some(queue) = &self.queue else {
            return Err(unexpected("write after the file was closed or failed"));
        };
        let started = Instant::now();
        let sent = queue.send(bs).await;
        self.waited += started.elapsed();
        if sent.is_ok() {
            return Ok(());
        }
        // The task stopped taking writes, which it does only on an error.
        match self.drain().await {
            Err(e) => Err(e),
            Ok(_) => Err(unexpected("a file's write task stopped without an error")),
        }
    }

    async fn close(&mut self) -> Result<()> {
        let (mut inner, writing) = self.drain().await?;
        let started = Instant::now();
        inner.close().await?;
        // What the overlap bought: the writes' time, of which the writer
        // waited only `waited_for_queue`.
        tracing::debug!(
            writing = ?writing,
            waited_for_queue = ?self.waited,
            closing = ?started.elapsed(),
            "file written behind its writer"
        );
        Ok(())
    }
}

impl Drop for WriteBehind {
    /// A writer dropped without `close` abandons its file, as the inner
    /// writer would: its queued writes are not uploaded.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn unexpected(message: &str) -> iceberg::Error {
    iceberg::Error::new(ErrorKind::Unexpected, message.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;

    /// Records what reaches it, one write per permit of `gate`; fails the
    /// write numbered `fail_at`.
    struct Recorder {
        writes: Arc<Mutex<Vec<Bytes>>>,
        closed: Arc<Mutex<bool>>,
        fail_at: Option<usize>,
        gate: Arc<Semaphore>,
    }

    #[async_trait::async_trait]
    impl FileWrite for Recorder {
        async fn write(&mut self, bs: Bytes) -> Result<()> {
            self.gate.acquire().await.unwrap().forget();
            let mut writes = self.writes.lock().unwrap();
            if self.fail_at == Some(writes.len()) {
                return Err(iceberg::Error::new(
                    ErrorKind::Unexpected,
                    "storage refused",
                ));
            }
            writes.push(bs);
            Ok(())
        }

        async fn close(&mut self) -> Result<()> {
            *self.closed.lock().unwrap() = true;
            Ok(())
        }
    }

    struct Recorded {
        writes: Arc<Mutex<Vec<Bytes>>>,
        closed: Arc<Mutex<bool>>,
        gate: Arc<Semaphore>,
    }

    fn recorder(fail_at: Option<usize>, permits: usize) -> (Recorder, Recorded) {
        let recorded = Recorded {
            writes: Arc::new(Mutex::new(Vec::new())),
            closed: Arc::new(Mutex::new(false)),
            gate: Arc::new(Semaphore::new(permits)),
        };
        let inner = Recorder {
            writes: recorded.writes.clone(),
            closed: recorded.closed.clone(),
            fail_at,
            gate: recorded.gate.clone(),
        };
        (inner, recorded)
    }

    /// Fails instead of hanging when a call waits for what never comes.
    async fn soon<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(10), future)
            .await
            .expect("the call waited on the storage")
    }

    #[tokio::test]
    async fn writes_reach_the_file_in_order_before_it_closes() {
        let (inner, recorded) = recorder(None, 0);
        let Recorded {
            writes,
            closed,
            gate,
        } = recorded;
        let mut writer = WriteBehind::new(Box::new(inner));
        // The storage takes nothing yet: one write is being written and one
        // waits in the queue, and neither holds the caller up.
        soon(writer.write(Bytes::from(vec![0; 3]))).await.unwrap();
        soon(writer.write(Bytes::from(vec![1; 3]))).await.unwrap();
        assert!(writes.lock().unwrap().is_empty());
        gate.add_permits(5);
        for i in 2..5u8 {
            soon(writer.write(Bytes::from(vec![i; 3]))).await.unwrap();
        }
        assert!(!*closed.lock().unwrap());
        soon(writer.close()).await.unwrap();
        let written: Vec<Vec<u8>> = writes.lock().unwrap().iter().map(|b| b.to_vec()).collect();
        assert_eq!(written, (0..5u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        assert!(*closed.lock().unwrap());
        assert_eq!(
            writer.close().await.unwrap_err().message(),
            "the file was closed already or its write failed"
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_what_the_next_call_returns_and_the_file_is_not_closed() {
        let (inner, recorded) = recorder(Some(1), 10);
        let Recorded { writes, closed, .. } = recorded;
        let mut writer = WriteBehind::new(Box::new(inner));
        let mut error = None;
        for i in 0..10u8 {
            if let Err(e) = writer.write(Bytes::from(vec![i])).await {
                error = Some(e);
                break;
            }
        }
        let error = match error {
            Some(e) => e,
            None => writer.close().await.unwrap_err(),
        };
        assert_eq!(error.message(), "storage refused");
        assert_eq!(writes.lock().unwrap().len(), 1);
        assert!(!*closed.lock().unwrap());
        assert!(writer.write(Bytes::from_static(b"x")).await.is_err());
    }

    #[tokio::test]
    async fn the_storage_survives_a_round_trip_through_serde() {
        let factory = WriteBehindFactory::default();
        let storage = factory.build(&StorageConfig::new()).unwrap();
        let text = serde_json::to_string(storage.as_ref()).unwrap();
        let back: Box<dyn Storage> = serde_json::from_str(&text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = format!("file://{}/a.bin", dir.path().display());
        let mut writer = back.new_output(&path).unwrap().writer().await.unwrap();
        writer.write(Bytes::from_static(b"abc")).await.unwrap();
        writer.write(Bytes::from_static(b"def")).await.unwrap();
        writer.close().await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), b"abcdef");
    }
}
