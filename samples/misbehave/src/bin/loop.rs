//! `loop`: a guest that never finishes (misbehaving sample).
//!
//! An infinite busy loop that the compiler cannot optimise away (every
//! iteration goes through `std::hint::black_box`), and that makes no host
//! calls. It is used to test the runtime's CPU limits: fuel exhaustion or
//! epoch-based interruption / wall-clock timeouts must stop it.
//! It prints nothing.

use std::hint::black_box;

fn main() {
    let mut counter: u64 = 0;
    loop {
        // black_box makes the value opaque to the optimiser, so neither the
        // loop nor the arithmetic can be removed or turned into a closed form.
        counter = black_box(counter.wrapping_add(black_box(1)));
    }
}
