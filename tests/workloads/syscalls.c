/* A syscall-heavy workload: main -> read_zeroes -> raw_read, which enters the kernel directly
 * (inline asm, so no libc frame without a frame pointer hides the caller). The kernel spends its
 * time copying zeroes, so kernel frames dominate under the user frames.
 * Usage: syscalls [seconds] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static char buf[1 << 16];

__attribute__((noinline)) long raw_read(long fd, void *p, long n) {
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(0L), "D"(fd), "S"(p), "d"(n) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x0 __asm__("x0") = fd;
    register long x1 __asm__("x1") = (long)p;
    register long x2 __asm__("x2") = n;
    register long x8 __asm__("x8") = 63; /* __NR_read */
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x1), "r"(x2), "r"(x8) : "memory");
    ret = x0;
#else
#error "unsupported architecture"
#endif
    return ret;
}

__attribute__((noinline)) void read_zeroes(int fd) {
    for (int i = 0; i < 64; i++) {
        raw_read(fd, buf, sizeof buf);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    double end = now() + seconds;
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) {
        perror("open /dev/zero");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (seconds <= 0 || now() < end) {
        read_zeroes(fd);
    }
    return 0;
}
