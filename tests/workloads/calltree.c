/* A known call tree for profiler tests: main -> outer -> {hot_a x3, hot_b x1} -> work.
 * Every call of work() does the same amount of arithmetic, so hot_a should get ~75 % of the
 * samples and hot_b ~25 %. Build with -O0 -fno-omit-frame-pointer so every frame is on the FP chain.
 * Usage: calltree [seconds]  (runs until killed without an argument). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile uint64_t sink;

__attribute__((noinline)) void work(void) {
    uint64_t x = sink;
    for (int i = 0; i < 200000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    sink = x;
}

__attribute__((noinline)) void hot_a(void) { work(); }
__attribute__((noinline)) void hot_b(void) { work(); }

__attribute__((noinline)) void outer(void) {
    hot_a();
    hot_a();
    hot_a();
    hot_b();
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
    while (seconds <= 0 || now() < end) {
        outer();
    }
    return 0;
}
