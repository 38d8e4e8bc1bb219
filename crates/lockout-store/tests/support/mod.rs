//! Shared by the store's tests.

use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `open` until it stops failing on sled's file lock, for at most 10 s: sled's I/O threads
/// let go of the files shortly after the last handle in this process is dropped, so opening
/// the same directory right after a drop can fail once or twice ("could not acquire lock").
pub fn when_released<T, E: std::fmt::Display>(dir: &Path, mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if e.to_string().contains("could not acquire lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
}

/// A raw sled database in `dir` with the store's segment size.
pub fn raw_sled(dir: &Path, segment_size: usize) -> sled::Db {
    when_released(dir, || sled::Config::new().path(dir).segment_size(segment_size).open())
}
