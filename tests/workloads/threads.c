/* Two busy threads besides an idle main thread: thread_a in spin_a, thread_b in spin_b. A profile
 * of the process must cover every thread, so both functions appear with about equal shares. The
 * threads are named (pthread_setname_np, what the kernel keeps as their comm) spin-a and spin-b.
 * Usage: threads [seconds] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile uint64_t sink;

__attribute__((noinline)) void spin_a(void) {
    uint64_t x = sink;
    for (;;) x = x * 6364136223846793005ULL + 1, sink = x;
}

__attribute__((noinline)) void spin_b(void) {
    uint64_t x = sink;
    for (;;) x = x * 2862933555777941757ULL + 3, sink = x;
}

static void *thread_a(void *arg) { (void)arg; spin_a(); return NULL; }
static void *thread_b(void *arg) { (void)arg; spin_b(); return NULL; }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0;
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
