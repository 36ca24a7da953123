/* A call chain for unwinding without frame pointers: main -> run -> {level_a -> level_b -> qsort
 * (glibc's merge sort, which calls compare_keys back), spin}. Each branch takes about half of the
 * time, so samples land in libc's sort, in the callback and in a plain loop.
 * Build with -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls: no function keeps a frame
 * record, only .eh_frame tells how to unwind; no call is turned into a jump (a tail call leaves
 * no frame of its own on the stack).
 * Usage: nofp [seconds]  (runs until killed without an argument). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KEYS 2048

static volatile uint64_t sink;
static uint64_t keys[KEYS];

/* Stops the optimiser from merging or moving code across the point it is placed at. */
#define BARRIER() __asm__ volatile("" ::: "memory")

/* Real work per comparison, so the callback holds a good share of the samples. */
__attribute__((noinline, noclone)) uint64_t mix(uint64_t x) {
    for (int i = 0; i < 24; i++) {
        x ^= x >> 31;
        x *= 0x7fb5d329728ea185ULL;
    }
    return x;
}

__attribute__((noinline, noclone)) int compare_keys(const void *a, const void *b) {
    uint64_t x = mix(*(const uint64_t *)a);
    uint64_t y = mix(*(const uint64_t *)b);
    BARRIER();
    return (x > y) - (x < y);
}

__attribute__((noinline, noclone)) void level_b(uint64_t seed) {
    for (int i = 0; i < KEYS; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        keys[i] = seed;
    }
    qsort(keys, KEYS, sizeof keys[0], compare_keys);
    BARRIER();
    sink += keys[0];
}

__attribute__((noinline, noclone)) void level_a(uint64_t seed) {
    level_b(seed);
    BARRIER();
    sink += 1;
}

/* The second branch: a loop with no calls, about as long as one sort. */
__attribute__((noinline, noclone)) void spin(uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 550000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        x ^= x >> 29;
    }
    sink = x;
}

__attribute__((noinline, noclone)) void run(uint64_t seed) {
    level_a(seed);
    spin(seed);
    BARRIER();
    sink += 2;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    double end = now() + seconds;
    printf("ready\n");
    fflush(stdout);
    for (uint64_t seed = 1; seconds <= 0 || now() < end; seed++) {
        run(seed);
    }
    return 0;
}
