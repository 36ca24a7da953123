/* Two busy threads besides an idle main thread: thread_a in spin_a, thread_b in spin_b. A profile
 * of the process must cover every thread, so both functions appear with about equal shares. The
 * threads are named (pthread_setname_np, what the kernel keeps as their comm) spin-a and spin-b.
 * Usage: threads [seconds [percent]]: exit after `seconds` (0: never); each thread busy `percent`
 * of the time (default 100), sleeping between slices of about 2 ms of work, so a test can keep
 * the machine's load light. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t sink;
/* Iterations in one slice, and the sleep after each (0: no sleep); set before the threads start. */
static uint64_t slice = 1u << 20;
static useconds_t rest_us;

__attribute__((noinline)) void spin_a(void) {
    uint64_t x = sink;
    for (;;) {
        for (uint64_t i = 0; i < slice; i++) x = x * 6364136223846793005ULL + 1, sink = x;
        if (rest_us) usleep(rest_us);
    }
}

__attribute__((noinline)) void spin_b(void) {
    uint64_t x = sink;
    for (;;) {
        for (uint64_t i = 0; i < slice; i++) x = x * 2862933555777941757ULL + 3, sink = x;
        if (rest_us) usleep(rest_us);
    }
}

static void *thread_a(void *arg) { (void)arg; spin_a(); return NULL; }
static void *thread_b(void *arg) { (void)arg; spin_b(); return NULL; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* How long one slice takes here, then the rest that makes a thread busy `percent` of the time. */
static void calibrate(double percent) {
    uint64_t x = sink;
    double start = now();
    for (uint64_t i = 0; i < slice; i++) x = x * 6364136223846793005ULL + 1, sink = x;
    double took = now() - start;
    if (took <= 0) took = 1e-3;
    slice = (uint64_t)(slice * 2e-3 / took) + 1; /* about 2 ms of work */
    rest_us = (useconds_t)(2e3 * (100.0 - percent) / percent);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    double percent = argc > 2 ? atof(argv[2]) : 100;
    if (!(percent > 0 && percent <= 100)) {
        fprintf(stderr, "threads: percent must be in (0, 100], not %s\n", argv[2]);
        return 2;
    }
    if (percent < 100) calibrate(percent);
    pthread_t a, b;
    pthread_create(&a, NULL, thread_a, NULL);
    pthread_create(&b, NULL, thread_b, NULL);
    pthread_setname_np(a, "spin-a");
    pthread_setname_np(b, "spin-b");
    printf("ready\n");
    fflush(stdout);
    if (seconds > 0) {
        usleep((useconds_t)(seconds * 1e6));
        return 0;
    }
    pause();
    return 0;
}
