//! skiff's benchmarks live in `benches/` (in-process, run with `cargo bench`) and in the
//! side-by-side scripts beside this crate; see benches/README.md. This library is empty.
