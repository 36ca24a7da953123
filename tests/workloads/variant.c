/* One of many distinct small binaries for the "agent memory with 200 distinct binaries mapped"
 * benchmark (`cargo xtask bench`, unwind section). Each copy is compiled with a different
 * -DVARIANT=n, so code, constants and GNU build id differ and the agent builds one unwind table per
 * copy. The process is lightly busy: about 0.5 ms of work every 200 ms, so it is sampled now and then
 * without two hundred copies filling the CPUs.
 * Build with -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls -Wl,--build-id.
 * Usage: variant [seconds]  (runs until killed without an argument). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef VARIANT
#define VARIANT 0
#endif

static volatile uint64_t sink;

#define BARRIER() __asm__ volatile("" ::: "memory")

__attribute__((noinline, noclone)) uint64_t spin(uint64_t x) {
    for (int i = 0; i < 250000 + VARIANT; i++) {
        x = x * 6364136223846793005ULL + (1442695040888963407ULL ^ VARIANT);
        x ^= x >> 29;
    }
    return x;
}

__attribute__((noinline, noclone)) uint64_t step(uint64_t x) {
    uint64_t r = spin(x + VARIANT);
    BARRIER();
    return r ^ 1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    double end = now() + seconds;
    struct timespec pause = {0, 200 * 1000 * 1000};
    printf("ready %d\n", VARIANT);
    fflush(stdout);
    for (uint64_t i = 0; seconds <= 0 || now() < end; i++) {
        sink += step(i);
        nanosleep(&pause, NULL);
    }
    return 0;
}
