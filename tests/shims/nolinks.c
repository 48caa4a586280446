/* LD_PRELOAD shim for tests/test_mirror.py: under $NO_LINKS_ROOT, refuse link(), symlink(),
 * chmod() and directory renames the way Drive's FUSE mount does, and note each refusal (and each
 * file rename) in $NO_LINKS_LOG. Built with: gcc -shared -fPIC -o nolinks.so nolinks.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static int under_root(const char *path) {
    const char *root = getenv("NO_LINKS_ROOT");
    return root && path && strncmp(path, root, strlen(root)) == 0;
}
static void note(const char *what, const char *path) {
    char comm[64] = "?";
    FILE *self = fopen("/proc/self/comm", "r");
    if (self) { if (fgets(comm, sizeof comm, self)) comm[strcspn(comm, "\n")] = 0; fclose(self); }
    FILE *log = fopen(getenv("NO_LINKS_LOG"), "a");
    if (log) { fprintf(log, "%s %s %s\n", what, comm, path); fclose(log); }
}
static int refuse(const char *what, const char *path) {
    note(what, path);
    errno = EOPNOTSUPP;
    return -1;
}
/* the absolute path of `path` relative to `dirfd`, into out */
static const char *resolve(int dirfd, const char *path, char *out, size_t size) {
    char base[PATH_MAX], link[64];
    if (path[0] == '/') return path;
    if (dirfd == AT_FDCWD) { if (!getcwd(base, sizeof base)) return path; }
    else {
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0) return path;
        base[n] = 0;
    }
    snprintf(out, size, "%s/%s", base, path);
    return out;
}
int link(const char *a, const char *b) { return refuse("link", b); }
int linkat(int fa, const char *a, int fb, const char *b, int flags) { return refuse("linkat", b); }
int symlink(const char *a, const char *b) { return refuse("symlink", b); }
int symlinkat(const char *a, int fd, const char *b) { return refuse("symlinkat", b); }
int chmod(const char *p, mode_t m) { return under_root(p) ? refuse("chmod", p) : ((int (*)(const char *, mode_t))dlsym(RTLD_NEXT, "chmod"))(p, m); }
int fchmodat(int fd, const char *p, mode_t m, int flags) {
    char full[PATH_MAX];
    if (under_root(resolve(fd, p, full, sizeof full))) return refuse("fchmodat", full);
    return ((int (*)(int, const char *, mode_t, int))dlsym(RTLD_NEXT, "fchmodat"))(fd, p, m, flags);
}
int fchmod(int fd, mode_t m) {
    char full[PATH_MAX];
    if (under_root(resolve(fd, "", full, sizeof full))) return refuse("fchmod", full);
    return ((int (*)(int, mode_t))dlsym(RTLD_NEXT, "fchmod"))(fd, m);
}
/* directory renames are refused; file renames into the root folder are noted (who made them) */
static int checked_rename(int fa, const char *a, int fb, const char *b) {
    struct stat st;
    char full[PATH_MAX], target[PATH_MAX];
    const char *path = resolve(fa, a, full, sizeof full);
    if (under_root(path) && fstatat(fa, a, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) return refuse("rename-dir", path);
    const char *dest = resolve(fb, b, target, sizeof target);
    if (under_root(dest)) note("renamed-file", dest);
    return 0;
}
int rename(const char *a, const char *b) {
    if (checked_rename(AT_FDCWD, a, AT_FDCWD, b)) return -1;
    return ((int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename"))(a, b);
}
int renameat(int fa, const char *a, int fb, const char *b) {
    if (checked_rename(fa, a, fb, b)) return -1;
    return ((int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat"))(fa, a, fb, b);
}
int renameat2(int fa, const char *a, int fb, const char *b, unsigned int flags) {
    if (checked_rename(fa, a, fb, b)) return -1;
    return ((int (*)(int, const char *, int, const char *, unsigned int))dlsym(RTLD_NEXT, "renameat2"))(fa, a, fb, b, flags);
}
