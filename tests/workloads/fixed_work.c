/* A fixed amount of CPU work that then exits, for overhead benchmarks (`cargo xtask bench`, P1):
 * ROUNDS times main -> outer -> {hot_a x3, hot_b x1} -> work, the call tree of calltree.c. It
 * measures itself, so process start-up and the profiler's own start-up are not part of the time.
 * Build with -O2 -fno-omit-frame-pointer (a profiler-friendly production build).
 * Usage: fixed_work ROUNDS
 * Prints one line: `wall_s=<seconds> cpu_s=<user+system seconds> rounds=<ROUNDS>`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static volatile uint64_t sink;

__attribute__((noinline)) void work(void) {
    uint64_t x = sink;
    for (int i = 0; i < 200000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    sink = x;
}

__attribute__((noinline)) void hot_a(void) { work(); __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void hot_b(void) { work(); __asm__ volatile("" ::: "memory"); }

__attribute__((noinline)) void outer(void) {
    hot_a();
    hot_a();
    hot_a();
    hot_b();
    __asm__ volatile("" ::: "memory");
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 2 || atol(argv[1]) <= 0) {
        fprintf(stderr, "usage: fixed_work ROUNDS\n");
        return 2;
    }
    long rounds = atol(argv[1]);
    double cpu0 = cpu_seconds();
    double t0 = now();
    for (long i = 0; i < rounds; i++) {
        outer();
    }
    double wall = now() - t0;
    double cpu = cpu_seconds() - cpu0;
    printf("wall_s=%.6f cpu_s=%.6f rounds=%ld\n", wall, cpu, rounds);
    return 0;
}
