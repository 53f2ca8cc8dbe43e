//! `hog`: a guest that eats memory until stopped (misbehaving sample).
//!
//! Allocates 1 MiB chunks forever, writes to every page of each chunk (so
//! the memory is really committed, not just reserved) and keeps them all
//! alive. It prints nothing itself. It is used to test the runtime's memory
//! limits: the linear memory grows until the host's limit (a
//! `ResourceLimiter`, or the 4 GiB wasm32 ceiling) refuses `memory.grow`; the
//! allocator then fails, std's OOM handler writes
//! `memory allocation of 1048576 bytes failed` to stderr and aborts, which is
//! an `unreachable` trap.

use std::hint::black_box;

const CHUNK: usize = 1024 * 1024;
const PAGE: usize = 4096;

fn main() {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut n: u8 = 0;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch one byte per page so every page is dirtied.
        for i in (0..CHUNK).step_by(PAGE) {
            chunk[i] = n;
        }
        n = n.wrapping_add(1);
        kept.push(black_box(chunk));
        black_box(&kept);
    }
}
