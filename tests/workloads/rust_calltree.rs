//! A Rust workload for profiler tests: main -> engine::Crunch<u64>::run -> {hot_a x3, hot_b x1}
//! -> spin. Built with frame pointers (`-C force-frame-pointers=yes`); its symbols are mangled, so
//! readable names in a profile prove demangling. Usage: rust_calltree [seconds]
use std::hint::black_box;
use std::time::{Duration, Instant};

mod engine {
    use std::hint::black_box;
    use std::marker::PhantomData;

    pub struct Crunch<T> {
        _t: PhantomData<T>,
    }

    #[inline(never)]
    pub fn spin(seed: u64) -> u64 {
        let mut x = seed;
        for _ in 0..200_000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
        x
    }

    // Work after the call keeps the optimiser from turning these into tail calls (a `jmp` leaves
    // no frame of its own on the stack).
    #[inline(never)]
    pub fn hot_a(seed: u64) -> u64 {
        black_box(spin(seed)) ^ 1
    }

    #[inline(never)]
    pub fn hot_b(seed: u64) -> u64 {
        black_box(spin(seed)) ^ 2
    }

    impl<T> Crunch<T> {
        pub fn new() -> Self {
            Self { _t: PhantomData }
        }

        #[inline(never)]
        pub fn run(&self, seed: u64) -> u64 {
            let a = hot_a(seed) ^ hot_a(seed + 1) ^ hot_a(seed + 2);
            black_box(a ^ hot_b(seed + 3))
        }
    }
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let crunch = engine::Crunch::<u64>::new();
    println!("ready");
    let mut seed = 1;
    while seconds <= 0.0 || Instant::now() < end {
        seed = black_box(crunch.run(seed));
    }
}
