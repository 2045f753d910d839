//! Owns: a blob arriving in the store read by a consumer in the same pass
//! (`fetch_teed`: the bytes a fetch streams in, handed chunk by chunk to
//! any reader on a thread of its own; `diff`'s layer scan is one), and a
//! layer blob arriving indexed that way (`fetch_layer`): the layer
//! reader (`layer::reader::index_layer`, the one tar reader and the one
//! entry rule set) on a thread of its own while the fetch hashes and
//! writes them. No second read of the blob, no second hash of it.
//!
//! The index is computed from bytes not yet verified, so it is kept only
//! when the fetch says the blob matched its digest and is stored; a fetch
//! that fails (a wrong digest, a short or long body, a network error)
//! leaves neither blob nor index. A source that cannot stream (a local
//! layout: a hard link) is indexed from the stored blob as before.
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

use super::Store;
use crate::layer::reader::index_layer;
use crate::oci::descriptor::Descriptor;

use super::layer_index::LayerIndexError;

/// Chunks buffered between the fetch and the indexer: enough to ride out
/// a stall on either side; at most a few MiB per layer (an HTTP client
/// hands over at most a few hundred KiB at a time).
const CHUNKS_IN_FLIGHT: usize = 64;

/// Why a layer could not be brought into the store.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The fetch failed (its own error, passed on as it is).
    #[error(transparent)]
    Fetch(anyhow::Error),
    /// The blob is stored but cannot be indexed.
    #[error(transparent)]
    Index(#[from] LayerIndexError),
}

/// What a fetch hands each chunk of the blob to, in order.
pub type Tee<'a> = &'a mut dyn FnMut(&[u8]);

impl Store {
    /// Brings layer blob `layer` into the store with `fetch` and records
    /// its index. `fetch` stores the blob (verified) and passes every
    /// chunk to the tee it is given; it returns true when it did, false
    /// when it stored the blob without streaming it (then the stored blob
    /// is indexed).
    pub fn fetch_layer(
        &self,
        layer: &Descriptor,
        fetch: impl FnOnce(Tee<'_>) -> anyhow::Result<bool>,
    ) -> Result<(), IntakeError> {
        let compression = self.layer_compression(layer)?;
        let streamed = self
            .fetch_teed(|bytes| index_layer(bytes, compression), fetch)
            .map_err(IntakeError::Fetch)?;
        let Some(index) = streamed else {
            return Ok(self.ensure_layer_index(layer)?);
        };
        let index = index.map_err(|e| self.indexing_error(&layer.digest, e))?;
        self.record_layer_index(&layer.digest, index)?;
        Ok(())
    }

    /// Runs `fetch` (it stores a blob, verified, handing every chunk to
    /// the tee) while `consume` reads those chunks as one stream on a
    /// thread of its own. `Some(what consume made)` only when the fetch
    /// succeeded AND streamed (so the bytes consumed were the verified
    /// blob's); `None` when it stored the blob without streaming (the
    /// caller then reads the stored blob); the fetch's error otherwise,
    /// and whatever `consume` made from those bytes is dropped.
    pub fn fetch_teed<T: Send>(
        &self,
        consume: impl FnOnce(&mut dyn Read) -> T + Send,
        fetch: impl FnOnce(Tee<'_>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Option<T>> {
        let (sender, chunks) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        std::thread::scope(|scope| {
            let consumer = scope.spawn(move || consume(&mut ChunkReader::new(chunks)));
            let mut feed = Feed(Some(sender));
            let fetched = fetch(&mut |chunk| feed.send(chunk));
            drop(feed);
            let made = consumer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok(fetched?.then_some(made))
        })
    }
}

/// The sending end; once the indexer stops reading (it finished, or gave
/// up on bytes that are not a layer) chunks are no longer copied.
struct Feed(Option<SyncSender<Vec<u8>>>);

impl Feed {
    fn send(&mut self, chunk: &[u8]) {
        let stopped = match &self.0 {
            Some(sender) => sender.send(chunk.to_vec()).is_err(),
            None => false,
        };
        if stopped {
            self.0 = None;
        }
    }
}

/// The chunks, read back as one stream; it ends when the sender is gone.
struct ChunkReader {
    chunks: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    fn new(chunks: Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            chunks,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(next) => (self.current, self.at) = (next, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layer_index::tests::store_with_layer;

    /// An empty store, and the bytes and index of a layer from another.
    fn empty_store_and_layer() -> (tempfile::TempDir, Store, Descriptor, Vec<u8>) {
        let (_source_dir, source, layer) = store_with_layer();
        let bytes = source.layout().read_blob(&layer.digest).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        (dir, store, layer, bytes)
    }

    #[test]
    fn a_streamed_layer_is_indexed_as_its_stored_blob_would_be() {
        let (_dir, store, layer, bytes) = empty_store_and_layer();
        store
            .fetch_layer(&layer, |tee| {
                bytes.chunks(7).for_each(&mut *tee);
                store.layout().write_blob(&bytes)?;
                Ok(true)
            })
            .unwrap();
        let streamed = store.cached_layer_index(&layer.digest).unwrap().unwrap();
        std::fs::remove_file(store.layer_index_path(&layer.digest)).unwrap();
        assert_eq!(store.layer_index(&layer).unwrap(), streamed);
    }

    #[test]
    fn a_failed_fetch_keeps_no_index_even_of_good_bytes() {
        let (_dir, store, layer, bytes) = empty_store_and_layer();
        let error = store
            .fetch_layer(&layer, |tee| {
                tee(&bytes);
                anyhow::bail!("the digest did not match")
            })
            .unwrap_err();
        assert!(matches!(error, IntakeError::Fetch(_)), "{error}");
        assert!(!store.has_layer_index(&layer.digest));
    }

    #[test]
    fn fetch_teed_hands_back_what_the_consumer_made_only_from_a_good_fetch() {
        let (_dir, store, _layer, bytes) = empty_store_and_layer();
        let length = |reader: &mut dyn Read| io::copy(reader, &mut io::sink()).unwrap();
        let streamed = store.fetch_teed(length, |tee| {
            bytes.chunks(5).for_each(&mut *tee);
            Ok(true)
        });
        assert_eq!(streamed.unwrap(), Some(bytes.len() as u64));
        let linked = store.fetch_teed(length, |_| Ok(false));
        assert_eq!(linked.unwrap(), None);
        let failed = store.fetch_teed(length, |tee| {
            tee(&bytes);
            anyhow::bail!("the digest did not match")
        });
        assert!(failed.is_err());
    }

    #[test]
    fn a_fetch_that_does_not_stream_is_indexed_from_the_store() {
        let (_dir, store, layer, bytes) = empty_store_and_layer();
        store
            .fetch_layer(&layer, |_| {
                store.layout().write_blob(&bytes)?;
                Ok(false)
            })
            .unwrap();
        assert_eq!(
            store
                .cached_layer_index(&layer.digest)
                .unwrap()
                .unwrap()
                .entries
                .len(),
            1
        );
    }
}
