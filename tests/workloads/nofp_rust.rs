//! A Rust workload without frame pointers, for unwinding by `.eh_frame`: main -> nofp_rust::run
//! -> outer -> inner -> spin. Built release-like: `-C opt-level=3 -C force-frame-pointers=no -g`.
//! Usage: nofp_rust [seconds]  (runs until killed without an argument).
use std::hint::black_box;
use std::time::{Duration, Instant};

#[inline(never)]
fn spin(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..200_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
    x
}

// Work after each call keeps it from becoming a tail call (a `jmp` leaves no frame on the stack).
#[inline(never)]
fn inner(seed: u64) -> u64 {
    black_box(spin(seed)) ^ 1
}

#[inline(never)]
fn outer(seed: u64) -> u64 {
    black_box(inner(seed)) ^ 2
}

#[inline(never)]
fn run(seed: u64) -> u64 {
    black_box(outer(seed)) ^ 3
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    println!("ready");
    let mut seed = 1;
    while seconds <= 0.0 || Instant::now() < end {
        seed = black_box(run(seed));
    }
}
