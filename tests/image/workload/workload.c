/* The workload the image test profiles from inside its own container. Every function of ours has
 * a name that exists nowhere but in this container's binary; qsort makes glibc call back into us
 * through its own static functions (msort_with_tmp), whose names only libc6-dbg's debug file has,
 * and every stack starts in glibc's static __libc_start_call_main. Built -O0 with frame pointers
 * so the walk is not what is being tested here. */
#include <stdlib.h>

#define N 4096
static unsigned long values[N];
static volatile unsigned long sink;

__attribute__((noinline)) static unsigned long kalypso_e2e_mix_c0ffee(unsigned long x) {
    for (int i = 0; i < 64; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

__attribute__((noinline)) static int kalypso_e2e_compare_c0ffee(const void *a, const void *b) {
    unsigned long x = kalypso_e2e_mix_c0ffee(*(const unsigned long *)a);
    unsigned long y = kalypso_e2e_mix_c0ffee(*(const unsigned long *)b);
    return (x > y) - (x < y);
}

__attribute__((noinline)) static void kalypso_e2e_sort_c0ffee(unsigned long seed) {
    for (int i = 0; i < N; i++) values[i] = seed + (unsigned long)i * 2654435761UL;
    qsort(values, N, sizeof values[0], kalypso_e2e_compare_c0ffee);
    sink += values[0];
}

int main(void) {
    for (unsigned long seed = 1;; seed++) kalypso_e2e_sort_c0ffee(seed);
}
