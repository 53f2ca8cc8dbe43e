//! `trap`: a guest that traps through a few named frames (misbehaving sample).
//!
//! `main` → `light_the_fuse` → `explode_deeply` → `detonate`, every function
//! `#[inline(never)]`, and `detonate` ends in `std::process::abort()`, which
//! on WASI compiles to the wasm `unreachable` instruction. Because the
//! release profile keeps the wasm `name` section, wasmtime's trap backtrace
//! shows these distinctive names, which the runtime's error reporting tests
//! look for.
//!
//! It prints one line to stdout (`about to trap`) before trapping, so tests
//! can also check that output produced before a trap is preserved.

use std::hint::black_box;
use std::io::Write;

fn main() {
    println!("about to trap");
    std::io::stdout().flush().unwrap();
    let depth = light_the_fuse(black_box(3));
    // Never reached.
    println!("unreachable: {depth}");
}

#[inline(never)]
fn light_the_fuse(n: u32) -> u32 {
    black_box(explode_deeply(black_box(n)) + 1)
}

#[inline(never)]
fn explode_deeply(n: u32) -> u32 {
    if n == 0 {
        detonate()
    } else {
        // Recurse a little so the backtrace has several explode_deeply frames.
        black_box(explode_deeply(black_box(n - 1)) + 1)
    }
}

#[inline(never)]
fn detonate() -> u32 {
    // `abort` is `unreachable` on wasm: an immediate trap, no unwinding.
    std::process::abort()
}
