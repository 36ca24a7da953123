/* Code that runs from malformed ELF files and from no file at all. Copies the start of this
 * program's own file up to the end of spin() into two files, and makes each bad: TRUNCATED keeps
 * the ELF header but loses everything after spin() (section headers, symbols, .eh_frame),
 * GARBAGE also gets absurd header fields (section and program header offsets, counts and sizes).
 * Both copies get a build id of their own (this program's, inverted): they are different files,
 * and a profiler that finds the intact notes must not take them for this program.
 * Each file is mapped executable, and spin() is also copied into anonymous memory (as a JIT
 * would); the three copies are called in turn, so samples land in each.
 * Usage: badelf TRUNCATED GARBAGE  (prints `ready`; runs until killed) */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Position-independent at -O0: locals on the stack, constants as immediates, no calls. */
__attribute__((noinline)) void spin(void) {
    volatile uint64_t x = 1;
    for (int i = 0; i < 2000000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
}

__attribute__((noinline)) void spin_end(void) {}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* The file offset of `addr` in this program's file, from /proc/self/maps. */
static long file_offset_of(void *addr) {
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) {
        die("/proc/self/maps");
    }
    char line[512];
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end, offset;
        if (sscanf(line, "%lx-%lx %*s %lx", &start, &end, &offset) == 3 &&
            (unsigned long)addr >= start && (unsigned long)addr < end) {
            fclose(maps);
            return (long)((unsigned long)addr - start + offset);
        }
    }
    die("spin() is not in /proc/self/maps");
    return 0;
}

/* Inverts the descriptor of every GNU build-id note the first LENGTH bytes hold. */
static void give_own_build_id(char *buf, long length) {
    Elf64_Ehdr *h = (Elf64_Ehdr *)buf;
    for (int i = 0; i < h->e_phnum; i++) {
        long at = (long)h->e_phoff + (long)i * h->e_phentsize;
        if (at + (long)sizeof(Elf64_Phdr) > length) {
            break;
        }
        Elf64_Phdr *ph = (Elf64_Phdr *)(buf + at);
        if (ph->p_type != PT_NOTE || ph->p_offset + ph->p_filesz > (uint64_t)length) {
            continue;
        }
        uint64_t off = ph->p_offset;
        uint64_t end = ph->p_offset + ph->p_filesz;
        while (off + sizeof(Elf64_Nhdr) <= end) {
            Elf64_Nhdr *n = (Elf64_Nhdr *)(buf + off);
            uint64_t name = off + sizeof(Elf64_Nhdr);
            uint64_t desc = name + ((n->n_namesz + 3) & ~3u);
            uint64_t next = desc + ((n->n_descsz + 3) & ~3u);
            if (next > end) {
                break;
            }
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && memcmp(buf + name, "GNU", 4) == 0) {
                for (uint32_t b = 0; b < n->n_descsz; b++) {
                    buf[desc + b] = (char)~buf[desc + b];
                }
            }
            off = next;
        }
    }
}

static void write_copy(const char *path, long length, int garbage) {
    char *buf = malloc(length);
    int in = open("/proc/self/exe", O_RDONLY);
    if (!buf || in < 0 || pread(in, buf, length, 0) != length) {
        die("reading /proc/self/exe");
    }
    close(in);
    give_own_build_id(buf, length);
    if (garbage) {
        Elf64_Ehdr *h = (Elf64_Ehdr *)buf;
        h->e_phoff = 0x7ffffffffffff000ULL;
        h->e_shoff = 0xfffffffffffffff0ULL;
        h->e_phnum = 0xffff;
        h->e_shnum = 0xfff0;
        h->e_shentsize = 0x7fff;
        h->e_phentsize = 3;
        h->e_shstrndx = 0xfffe;
    }
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (out < 0 || write(out, buf, length) != length || close(out) != 0) {
        die(path);
    }
    free(buf);
}

typedef void (*spin_fn)(void);

/* spin()'s code copied into an anonymous executable mapping. */
static spin_fn jit_copy(long size) {
    char *at = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (at == MAP_FAILED) {
        die("mmap");
    }
    memcpy(at, (void *)spin, size);
    __builtin___clear_cache(at, at + size);
    if (mprotect(at, size, PROT_READ | PROT_EXEC) != 0) {
        die("mprotect");
    }
    return (spin_fn)at;
}

/* Maps the file executable and returns where spin()'s copy is in it. */
static spin_fn map_copy(const char *path, long offset, long length) {
    long page = sysconf(_SC_PAGESIZE);
    long first = offset / page * page;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        die(path);
    }
    char *at = mmap(NULL, length - first, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, first);
    if (at == MAP_FAILED) {
        die("mmap");
    }
    close(fd);
    return (spin_fn)(at + (offset - first));
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: badelf TRUNCATED GARBAGE\n");
        return 2;
    }
    long size = (char *)spin_end - (char *)spin;
    if (size <= 0 || size > 4096) {
        fprintf(stderr, "spin() is not followed by spin_end() (%ld bytes apart)\n", size);
        return 1;
    }
    long offset = file_offset_of((void *)spin);
    long length = offset + size;
    spin_fn copies[3];
    for (int garbage = 0; garbage < 2; garbage++) {
        write_copy(argv[1 + garbage], length, garbage);
        copies[garbage] = map_copy(argv[1 + garbage], offset, length);
    }
    copies[2] = jit_copy(size);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        for (int i = 0; i < 3; i++) {
            copies[i]();
        }
    }
}
