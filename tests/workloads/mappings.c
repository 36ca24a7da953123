/* Thousands of executable mappings, then the call tree of calltree.c: main -> outer ->
 * {hot_a x3, hot_b x1} -> work. Half of the mappings are pages of this program's own file at
 * varying offsets, half are anonymous; a PROT_NONE page between each keeps the kernel from
 * merging them, so /proc/PID/maps lists every one.
 * Usage: mappings COUNT  (prints `ready` once mapped; runs until killed) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

static void map_many(long count) {
    long page = sysconf(_SC_PAGESIZE);
    int fd = open("/proc/self/exe", O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror("/proc/self/exe");
        exit(1);
    }
    long file_pages = st.st_size / page;
    /* Reserve the whole range first so nothing else lands in the gaps. */
    char *base = mmap(NULL, 2 * count * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("reserving");
        exit(1);
    }
    for (long i = 0; i < count; i++) {
        char *at = base + 2 * i * page;
        void *got = i % 2 == 0
                        ? mmap(at, page, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd,
                               (i / 2 % file_pages) * page)
                        : mmap(at, page, PROT_READ | PROT_EXEC,
                               MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0);
        if (got == MAP_FAILED) {
            perror("mapping");
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    map_many(argc > 1 ? atol(argv[1]) : 5000);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        outer();
    }
}
