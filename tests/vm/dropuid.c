/* dropuid UID GID CMD [ARGS...]: run CMD as an unprivileged user, for the VM test
 * (`cargo xtask vm-test`). Busybox here has no chpst/setpriv, and its su needs a password
 * database. Started as root, setuid() to a non-zero uid clears every capability (no keep-caps), so
 * CMD runs with no CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN, like an ordinary user's process. */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: dropuid UID GID CMD [ARGS...]\n");
        return 2;
    }
    uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
    gid_t gid = (gid_t)strtoul(argv[2], NULL, 10);
    if (uid == 0) {
        fprintf(stderr, "dropuid: refusing uid 0\n");
        return 2;
    }
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        perror("dropuid");
        return 2;
    }
    if (getuid() == 0 || geteuid() == 0 || setuid(0) == 0) {
        fprintf(stderr, "dropuid: still root after dropping\n");
        return 2;
    }
    execvp(argv[3], argv + 3);
    perror(argv[3]);
    return 127;
}
