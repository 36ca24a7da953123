/* Process churn for fault tests: starts short-lived processes at a target rate. Each one is a
 * fresh exec of this program that spins for a random 0-2 ms and exits, so some are sampled,
 * announced to the agent and gone again while the agent reads their /proc/PID/maps. With
 * MAPPINGS, each first maps that many anonymous executable pages (below its libraries, a
 * PROT_NONE page between each so none merge): its maps file is long, and reading it takes long
 * enough that the process often exits halfway through.
 * Usage: churn RATE SECONDS REPORT [MAPPINGS]  (prints `ready`, then writes
 *        `N processes ran in S s: R per second (M spawned)` to REPORT when done)
 *        churn --child MICROSECONDS MAPPINGS   (what each short-lived process runs) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Children alive at once; beyond it the parent waits, so a stall cannot fork-bomb the machine. */
#define MAX_LIVE 64

static volatile uint64_t sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void child_spin(double seconds) {
    double end = now() + seconds;
    uint64_t x = sink;
    while (now() < end) {
        for (int i = 0; i < 1000; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        }
    }
    sink = x;
}

/* Children that ran to the end (exec worked and they exited 0). */
static long finished;

static void map_many(long count) {
    if (count <= 0) {
        return;
    }
    long page = sysconf(_SC_PAGESIZE);
    char *base = mmap(NULL, 2 * count * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        _exit(1);
    }
    for (long i = 0; i < count; i++) {
        if (mmap(base + 2 * i * page, page, PROT_READ | PROT_EXEC,
                 MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) {
            _exit(1);
        }
    }
}

static void reap(int *live, int block) {
    while (*live > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, block ? 0 : WNOHANG);
        if (pid <= 0) {
            return;
        }
        (*live)--;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            finished++;
        }
        block = 0;
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--child") == 0) {
        map_many(atol(argv[3]));
        child_spin(atof(argv[2]) / 1e6);
        return 0;
    }
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: churn RATE SECONDS REPORT [MAPPINGS]\n");
        return 2;
    }
    const char *mappings = argc == 5 ? argv[4] : "0";
    double rate = atof(argv[1]);
    double seconds = atof(argv[2]);
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        perror("readlink /proc/self/exe");
        return 1;
    }
    self[len] = '\0';
    printf("ready\n");
    fflush(stdout);
    srand((unsigned)getpid());
    double start = now();
    long spawned = 0;
    int live = 0;
    while (now() - start < seconds) {
        /* Catch up when behind schedule; sleep when ahead. */
        double due = start + spawned / rate;
        double wait = due - now();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
        reap(&live, live >= MAX_LIVE);
        char spin[32];
        snprintf(spin, sizeof spin, "%d", rand() % 2000);
        pid_t pid = fork();
        if (pid == 0) {
            execl(self, "churn", "--child", spin, mappings, (char *)NULL);
            _exit(127);
        }
        if (pid < 0) {
            if (errno == EAGAIN) {
                reap(&live, 1);
                continue;
            }
            perror("fork");
            return 1;
        }
        live++;
        spawned++;
    }
    double elapsed = now() - start;
    while (live > 0) {
        reap(&live, 1);
    }
    FILE *report = fopen(argv[3], "w");
    if (!report) {
        perror(argv[3]);
        return 1;
    }
    fprintf(report, "%ld processes ran in %.2f s: %.1f per second (%ld spawned)\n", finished,
            elapsed, finished / elapsed, spawned);
    fclose(report);
    return 0;
}
