//! Pinned, deterministic, parallel gzip for layer blobs.
//!
//! Owns: turning the uncompressed tar stream into exactly one sequence of
//! gzip bytes, whatever the number of threads. It knows nothing of tar.
//!
//! Design (the bytes depend only on `GZIP_LEVEL`, `BLOCK_SIZE`, the flate2
//! backend pinned in Cargo.toml (zlib-rs) and the input):
//! - the input is cut at fixed offsets into `BLOCK_SIZE` (1 MiB) blocks; the
//!   last block holds the remainder (1..=BLOCK_SIZE bytes; 0 only for empty
//!   input). Boundaries depend on byte offsets, never on `write` call sizes;
//! - each block is compressed on its own (a fresh, zeroed raw-deflate state,
//!   never a reset one: see `compress_block`; no shared dictionary) by `compress_block`: non-last blocks end with a sync flush
//!   (an empty stored block, so the output is byte-aligned and blocks can be
//!   concatenated), the last one with `Finish` (sets BFINAL);
//! - blocks are compressed by a pool of worker threads (up to
//!   `available_parallelism`), at most `2 * workers` in flight, and written
//!   out strictly in order; with one worker the calling thread compresses.
//!   Because a block's bytes never depend on other blocks, 1 worker and N
//!   workers produce identical output (unit-tested);
//! - the gzip member: fixed 10-byte header (no FNAME/FCOMMENT/FEXTRA, MTIME 0,
//!   XFL 0, OS 255 "unknown": nothing about the build host leaks in), the
//!   concatenated deflate blocks, then CRC32 (crc32fast, computed per block by
//!   the workers and combined in order) and ISIZE (length mod 2^32).
//!
//! Any gzip reader (GNU gzip, Go's compress/gzip, flate2) decodes it: it is a
//! single ordinary gzip member, the same construction pigz uses.
//!
//! Failure: a job that panics in a worker (or inline) is caught
//! (`catch_unwind`) and answered with an error for its sequence number, so
//! the collector never waits for a block that will not come (other live
//! workers keep the result channel open, so waiting would hang forever).
//! The first error is kept: every later `write`/`finish` returns it at once.
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The pinned deflate level: 5. Measured with `STAGEX_BENCH_LEVELS=1 cargo
/// bench --bench layer` (one thread, 1 MiB blocks, mixed text/binary-like
/// content): zlib-rs level 6 runs at about half the speed of level 5
/// (~16-18 vs ~29-34 MiB/s on a loaded 2-core machine; it switches to the
/// lazy "slow" strategy) and is slower than GNU `gzip -6`, for only 2.4%
/// smaller output; levels 1-3 are faster but 3-18% larger. Level 5 output is
/// ~2% larger than `gzip -6`'s and the writer is >2x faster than
/// `tar | gzip -n` on 2 cores. Changing it changes every layer digest (the
/// golden test catches that).
pub const GZIP_LEVEL: u32 = 5;

/// The pinned block size: each block is deflated independently. Changing it
/// changes every layer digest.
pub const BLOCK_SIZE: usize = 1 << 20;

/// The fixed gzip member header: magic, CM=deflate, FLG=0, MTIME=0, XFL=0,
/// OS=255 (unknown).
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Compresses one block as raw deflate with a FRESH state. Non-last blocks
/// end byte-aligned with a sync flush; the last finishes the stream.
///
/// The state is never reused (`reset`): zlib-rs's reset does not clear the
/// window, and its match finder may read stale window bytes past the data,
/// so a reused state can give different (valid) output depending on what it
/// compressed before (zlib-rs issue #459). A fresh state's window is zeroed,
/// so a block's bytes depend only on the block. The allocation (~300 KiB per
/// 1 MiB block) costs well under 1%.
pub fn compress_block(input: &[u8], last: bool) -> Vec<u8> {
    let mut state = Compress::new(Compression::new(GZIP_LEVEL), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 128);
    loop {
        let consumed = state.total_in() as usize;
        let status = state
            .compress_vec(&input[consumed..], &mut out, flush)
            .expect("deflate of an in-memory buffer cannot fail");
        let all_in = state.total_in() as usize == input.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            return out;
        }
        out.reserve(64 * 1024);
    }
}

struct Job {
    seq: u64,
    input: Vec<u8>,
    last: bool,
    /// Test hook: the job panics (simulates a bug or allocation failure).
    #[cfg(test)]
    panic: bool,
}

struct Done {
    seq: u64,
    output: Vec<u8>,
    crc: crc32fast::Hasher,
    input: Vec<u8>,
}

fn run_job(job: Job) -> Done {
    #[cfg(test)]
    if job.panic {
        panic!("injected gzip worker panic (block {})", job.seq);
    }
    let output = compress_block(&job.input, job.last);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&job.input);
    Done {
        seq: job.seq,
        output,
        crc,
        input: job.input,
    }
}

/// A job's result: its block, or why it failed (never silence: the
/// collector counts on one answer per job).
type Answer = Result<Done, WorkerFailed>;

/// Why the gzip pool could not compress a block.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WorkerFailed {
    #[error("gzip worker failed on block {seq}: {why}")]
    Panicked { seq: u64, why: String },
    #[error("gzip worker threads died")]
    Gone,
}

/// Runs a job, turning a panic into an error naming the block.
fn run_job_caught(job: Job) -> Answer {
    let seq = job.seq;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(job))).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        WorkerFailed::Panicked { seq, why }
    })
}

struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Answer>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(workers: usize) -> Pool {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Answer>();
        let handles = (0..workers)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if done_tx.send(run_job_caught(job)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(job_tx),
            done: done_rx,
            handles,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None; // closes the channel: workers exit
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The number of compression workers to use by default: one per core this
/// process may use (the output does not depend on it).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A `Write` that gzips what it is given, in parallel, into `out`.
/// Call `finish` to write the last block and the trailer.
pub struct ParallelGzipWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    free: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    len: u64,
    next_seq: u64,
    next_write: u64,
    pending: BTreeMap<u64, Done>,
    in_flight: usize,
    max_in_flight: usize,
    pool: Option<Pool>,
    /// The first failure: once set, the output is incomplete and every
    /// call returns it.
    failed: Option<WorkerFailed>,
    /// Test hook: the block with this sequence number panics.
    #[cfg(test)]
    panic_at: Option<u64>,
}

impl<W: Write> ParallelGzipWriter<W> {
    /// `workers` = 0 means `default_workers()`. The output bytes do not
    /// depend on it.
    pub fn new(mut out: W, workers: usize) -> io::Result<Self> {
        let workers = if workers == 0 {
            default_workers()
        } else {
            workers
        };
        out.write_all(&GZIP_HEADER)?;
        let pool = (workers > 1).then(|| Pool::new(workers));
        Ok(ParallelGzipWriter {
            out,
            buf: Vec::with_capacity(BLOCK_SIZE),
            free: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 2 * workers,
            pool,
            failed: None,
            #[cfg(test)]
            panic_at: None,
        })
    }

    /// The stored failure as an io::Error, if any.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    /// Records the first failure and returns it.
    fn fail(&mut self, why: WorkerFailed) -> io::Error {
        let why = self.failed.get_or_insert(why).clone();
        io::Error::other(why)
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        self.check()?;
        let fresh = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE));
        let input = std::mem::replace(&mut self.buf, fresh);
        let job = Job {
            seq: self.next_seq,
            input,
            last,
            #[cfg(test)]
            panic: self.panic_at == Some(self.next_seq),
        };
        self.next_seq += 1;
        let Some(pool) = self.pool.as_ref() else {
            let done = run_job_caught(job).map_err(|why| self.fail(why))?;
            self.pending.insert(done.seq, done);
            return self.write_ready();
        };
        let sent = pool
            .jobs
            .as_ref()
            .expect("jobs channel open until drop")
            .send(job);
        if sent.is_err() {
            return Err(self.fail(WorkerFailed::Gone));
        }
        self.in_flight += 1;
        while self.in_flight >= self.max_in_flight {
            self.receive_one()?;
        }
        self.write_ready()
    }

    fn receive_one(&mut self) -> io::Result<()> {
        let pool = self.pool.as_ref().expect("a pool when not inline");
        // Every job sends exactly one answer (panics are caught), so this
        // returns as long as a job is in flight; Err(RecvError) only if
        // every worker is gone.
        let answer = pool.done.recv();
        self.in_flight -= 1;
        match answer {
            Ok(Ok(done)) => {
                self.pending.insert(done.seq, done);
                Ok(())
            }
            Ok(Err(why)) => Err(self.fail(why)),
            Err(_) => Err(self.fail(WorkerFailed::Gone)),
        }
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(mut done) = self.pending.remove(&self.next_write) {
            self.out.write_all(&done.output)?;
            self.crc.combine(&done.crc);
            self.next_write += 1;
            done.input.clear();
            self.free.push(done.input);
        }
        Ok(())
    }

    /// Compresses the last block, writes the trailer, returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        self.submit(true)?;
        while self.in_flight > 0 {
            self.receive_one()?;
            self.write_ready()?;
        }
        debug_assert_eq!(self.next_write, self.next_seq);
        let crc = self.crc.clone().finalize();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        trailer[4..].copy_from_slice(&(self.len as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        self.pool = None;
        // Move `out` out of self: replace self with a shell is not possible
        // for a generic W, so destructure.
        let ParallelGzipWriter { out, .. } = self;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzipWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let total = data.len();
        while !data.is_empty() {
            if self.buf.len() == BLOCK_SIZE {
                self.submit(false)?;
            }
            let take = (BLOCK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.len += take as u64;
            data = &data[take..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are cut at fixed offsets only: a flush must not end one
        // early (that would change the bytes), so it only flushes `out`.
        self.out.flush()
    }
}

/// Gzips a byte slice with the pinned settings (convenience for tests and
/// small blobs).
pub fn gzip_bytes(input: &[u8], workers: usize) -> Vec<u8> {
    let mut w = ParallelGzipWriter::new(Vec::new(), workers).expect("writing to a Vec");
    w.write_all(input).expect("writing to a Vec");
    w.finish().expect("writing to a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Compressible but not trivial input spanning several blocks.
    fn sample(len: usize) -> Vec<u8> {
        let words = [
            &b"layer "[..],
            b"stagex ",
            b"\x7fELF\x02\x01",
            b"deterministic ",
        ];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                out.extend_from_slice(words[(x % 4) as usize]);
            }
        }
        out.truncate(len);
        out
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn output_is_identical_for_1_and_4_workers_and_round_trips() {
        let input = sample(3 * BLOCK_SIZE + 12345);
        let one = gzip_bytes(&input, 1);
        let four = gzip_bytes(&input, 4);
        assert_eq!(one, four);
        assert_eq!(&one[..10], &GZIP_HEADER);
        assert_eq!(gunzip(&one), input);
        assert!(one.len() < input.len() / 2, "{} bytes", one.len());
    }

    #[test]
    fn block_boundaries_do_not_depend_on_write_sizes() {
        let input = sample(2 * BLOCK_SIZE + 7);
        let whole = gzip_bytes(&input, 2);
        let mut w = ParallelGzipWriter::new(Vec::new(), 3).unwrap();
        for chunk in input.chunks(4093) {
            w.write_all(chunk).unwrap();
            w.flush().unwrap();
        }
        assert_eq!(w.finish().unwrap(), whole);
    }

    #[test]
    fn edge_sizes_round_trip() {
        for len in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
        ] {
            let input = sample(len);
            let gz = gzip_bytes(&input, 2);
            assert_eq!(gunzip(&gz), input, "len {len}");
            assert_eq!(gz, gzip_bytes(&input, 1), "len {len}");
        }
    }

    /// Runs `f` on its own thread; a hang (the old collector waited forever
    /// for a panicked block while the other workers lived) fails the test
    /// instead of blocking the suite. The bound is a hang guard, not a
    /// timing assertion.
    fn without_hanging<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(300))
            .expect("the gzip writer hung after a worker failure")
    }

    fn writer_failing_at(workers: usize, seq: u64) -> ParallelGzipWriter<Vec<u8>> {
        let mut w = ParallelGzipWriter::new(Vec::new(), workers).unwrap();
        w.panic_at = Some(seq);
        w
    }

    #[test]
    fn a_worker_panic_is_an_error_from_write_not_a_hang() {
        for workers in [1, 2, 3] {
            let (first, again, finished) = without_hanging(move || {
                let mut w = writer_failing_at(workers, 0);
                let input = sample(16 * BLOCK_SIZE);
                let first = w.write_all(&input).unwrap_err();
                let again = w.write_all(b"more").unwrap_err();
                let finished = w.finish().unwrap_err();
                (first, again, finished)
            });
            for e in [&first, &again, &finished] {
                assert!(
                    e.to_string().contains("gzip worker failed on block 0")
                        && e.to_string().contains("injected"),
                    "{workers} workers: {e}"
                );
            }
        }
    }

    #[test]
    fn a_panic_in_the_last_block_is_an_error_from_finish() {
        for workers in [1, 4] {
            let err = without_hanging(move || {
                let mut w = writer_failing_at(workers, 2);
                w.write_all(&sample(2 * BLOCK_SIZE + 5)).unwrap();
                w.finish().unwrap_err()
            });
            assert!(
                err.to_string().contains("gzip worker failed on block 2"),
                "{workers} workers: {err}"
            );
        }
    }
}
