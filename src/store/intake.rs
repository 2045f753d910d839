//! Owns: a layer blob arriving in the store indexed in the same pass: the
//! bytes a fetch streams in are handed, chunk by chunk, to the layer
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

/// Chunks buffered between the fetch and the indexer (a few MiB at the
/// usual chunk sizes): enough to ride out a stall on either side.
const CHUNKS_IN_FLIGHT: usize = 256;

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
        let (sender, chunks) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        std::thread::scope(|scope| {
            let indexer = scope.spawn(move || index_layer(ChunkReader::new(chunks), compression));
            let mut feed = Feed(Some(sender));
            let fetched = fetch(&mut |chunk| feed.send(chunk));
            drop(feed);
            let index = indexer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if !fetched.map_err(IntakeError::Fetch)? {
                return Ok(self.ensure_layer_index(layer)?);
            }
            let index = index.map_err(|e| self.indexing_error(&layer.digest, e))?;
            self.record_layer_index(&layer.digest, index)?;
            Ok(())
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
