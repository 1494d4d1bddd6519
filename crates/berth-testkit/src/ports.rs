//! TCP ports for test servers' listeners, handed out so that no one else takes them between
//! the choice and the server's bind.
//!
//! Asking the kernel for a free port (binding port 0) and closing it again leaves a window in
//! which any outgoing connection on the machine (kubectl talking to another test's server)
//! may be given that very port as its source port, and the server then fails to bind. So
//! ports come from below the kernel's ephemeral range, which the kernel never hands out on
//! its own, and each one is held for the rest of the test process through an exclusive
//! `flock` on `/tmp/berth-test-ports/<port>.lock` (released by the kernel when the process
//! ends), so test binaries running side by side do not share one either. Slots' NodePorts
//! start at 30000, above this range.

use std::{
    fs::File,
    net::TcpListener,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use rustix::fs::{FlockOperation, flock};

const LOCK_DIR: &str = "/tmp/berth-test-ports";
const FIRST: u16 = 20000;
const COUNT: u16 = 10000;

/// The locks of the ports this process holds (kept open until it ends).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A port no other test process holds and nothing listens on right now, on any address.
pub(crate) fn reserve() -> u16 {
    std::fs::create_dir_all(LOCK_DIR).expect("creating the test port directory");
    let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A different starting point per process and per call spreads concurrent processes apart.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let start = (std::process::id() ^ nanos) % u32::from(COUNT);
    for step in 0..u32::from(COUNT) {
        let port = FIRST + u16::try_from((start + step) % u32::from(COUNT)).expect("port in range");
        let Ok(file) = File::options().create(true).truncate(false).write(true).open(format!("{LOCK_DIR}/{port}.lock"))
        else {
            continue;
        };
        // This process's own ports are locked by it already: flock on another descriptor of
        // the same file conflicts with that lock, so they are skipped too.
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", port)).is_err() || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        held.push(file);
        return port;
    }
    panic!("no free test port in {FIRST}..{}", FIRST + COUNT);
}
