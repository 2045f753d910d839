//! Owns: taking an exclusive `flock` with a limit on the wait, for the
//! short read-decide-write steps of stagex's caches and stores (the blob
//! verdict cache, a signature store's image directory). The kernel drops
//! a flock when its holder dies, even by kill -9, so none is left behind;
//! but a holder that is alive and stopped (Ctrl-Z, a debugger) would make
//! a plain blocking `flock` wait for ever, hence the limit.
use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// What asking for the lock gave.
#[derive(Debug)]
pub enum Lock {
    /// Held until the file is dropped.
    Held(File),
    /// The file system has no `flock` (some network ones).
    Unsupported,
    /// Another holder kept it for the whole wait.
    Busy,
}

/// An exclusive lock on `file`, waiting at most `wait` for another holder.
pub fn lock_exclusive(file: File, wait: Duration) -> io::Result<Lock> {
    match try_lock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Lock::Held(file)),
        Err(Errno::WOULDBLOCK) => Ok(wait_for(file, wait)),
        Err(e) if unsupported(e) => Ok(Lock::Unsupported),
        Err(e) => Err(e.into()),
    }
}

/// True for the errors `flock` gives on a file system without it.
pub fn unsupported(error: Errno) -> bool {
    [Errno::NOLCK, Errno::OPNOTSUPP, Errno::INVAL, Errno::BADF].contains(&error)
}

fn try_lock(file: &File, operation: FlockOperation) -> Result<(), Errno> {
    loop {
        match flock(file, operation) {
            Err(Errno::INTR) => continue,
            done => return done,
        }
    }
}

/// Blocks on the lock in a helper thread, for at most `wait`. A lock the
/// thread gets after we gave up is released at once (the file is dropped
/// with the message nobody receives).
fn wait_for(file: File, wait: Duration) -> Lock {
    let (sender, receiver) = mpsc::channel();
    let waiter = std::thread::Builder::new().spawn(move || {
        if try_lock(&file, FlockOperation::LockExclusive).is_ok() {
            let _ = sender.send(file);
        }
    });
    // No thread (out of resources): as if the holder kept it.
    if waiter.is_err() {
        return Lock::Busy;
    }
    receiver.recv_timeout(wait).map_or(Lock::Busy, Lock::Held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_waited_for_up_to_the_limit_then_busy() {
        let dir = tempfile::tempdir().unwrap();
        let open = || File::open(dir.path()).unwrap();
        let Lock::Held(first) = lock_exclusive(open(), Duration::ZERO).unwrap() else {
            panic!("a free lock is held at once")
        };
        let waited = lock_exclusive(open(), Duration::from_millis(50)).unwrap();
        assert!(matches!(waited, Lock::Busy), "{waited:?}");
        drop(first);
        // The waiter given up on may take and drop it first: wait for it.
        let again = lock_exclusive(open(), Duration::from_secs(60)).unwrap();
        assert!(matches!(again, Lock::Held(_)), "{again:?}");
    }

    #[test]
    fn a_lock_released_during_the_wait_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let open = || File::open(dir.path()).unwrap();
        let Lock::Held(first) = lock_exclusive(open(), Duration::ZERO).unwrap() else {
            panic!("a free lock is held at once")
        };
        std::thread::scope(|scope| {
            let second = scope.spawn(|| lock_exclusive(open(), Duration::from_secs(60)));
            drop(first);
            let second = second.join().unwrap().unwrap();
            assert!(matches!(second, Lock::Held(_)), "{second:?}");
        });
    }
}
