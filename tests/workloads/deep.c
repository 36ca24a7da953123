/* A deep stack without frame pointers: main -> descend (DEPTH times) -> spin.
 * Build with -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls.
 * Usage: deep DEPTH  (prints "ready", runs until killed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static volatile uint64_t sink;

#define BARRIER() __asm__ volatile("" ::: "memory")

__attribute__((noinline, noclone)) uint64_t spin(uint64_t x) {
    for (int i = 0; i < 1000000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        x ^= x >> 29;
    }
    return x;
}

/* Recursion that the compiler can neither flatten nor turn into a loop: the result of the
 * recursive call is used after it returns. */
__attribute__((noinline, noclone)) uint64_t descend(int depth, uint64_t x) {
    if (depth <= 0) {
        return spin(x);
    }
    uint64_t r = descend(depth - 1, x * 3 + 1);
    BARRIER();
    return r ^ (uint64_t)depth;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 100;
    printf("ready\n");
    fflush(stdout);
    for (uint64_t i = 0;; i++) {
        sink += descend(depth, i);
    }
}
