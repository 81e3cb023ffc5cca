/* Records every write, zeroing, resize and sync a process makes to a set of files, for the
 * power-loss test harness (tests/common/crash.rs). Loaded with LD_PRELOAD.
 *
 * TRACE_TARGETS: the files to watch, separated by ':'. TRACE_DIR: where the logs go, one per
 * target, named by its position (0.log, 1.log, ...). A file is recognised by device and inode,
 * whatever fd or name it is reached by.
 *
 * Each record: kind (1 byte), then three little-endian u64 a, b, c, then for 'W' b bytes:
 *   W off len 0 + data   a write
 *   Z off len keep_size  fallocate that makes a range read as zeroes (punch hole, zero range)
 *   A off len keep_size  fallocate that allocates (the range reads as before)
 *   T size 0 0           truncate
 *   S first 0 0          a sync returned: every record before index `first` (counted from 0)
 *                        is on disk; records after it may or may not be
 *   H off len flags      sync_file_range: writeback started, nothing made durable (no bound)
 *   X 0 0 0              an operation the harness cannot replay (FICLONE, an append, ...)
 *
 * A kernel copy or clone (copy_file_range, also through syscall(2); the FICLONERANGE ioctl) is
 * recorded as a write of what it left in the target range, read back right after it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_TARGETS 8

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ntargets;
static dev_t tdev[MAX_TARGETS];
static ino_t tino[MAX_TARGETS];
static int tlog[MAX_TARGETS];
/* Records so far per target, shared (a mapped file beside the log) with the child processes
 * that inherit the shim, such as the QEMU tools imgchain runs on the same image: their records
 * append to the same log, so the indices of sync records must count theirs too. */
static uint64_t *tcount[MAX_TARGETS];

static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_fallocate64)(int, int, off_t, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_syncfs)(int);
static void (*real_sync)(void);
static ssize_t (*real_copy_file_range)(int, off_t *, int, off_t *, size_t, unsigned int);
static int (*real_sync_file_range)(int, off_t, off_t, unsigned int);
static long (*real_syscall)(long, ...);
static int (*real_ioctl)(int, unsigned long, ...);
static ssize_t (*real_pread64)(int, void *, size_t, off_t);

static void init(void) {
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev64");
    real_pwritev2 = dlsym(RTLD_NEXT, "pwritev64v2");
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_fallocate64 = dlsym(RTLD_NEXT, "fallocate64");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_syncfs = dlsym(RTLD_NEXT, "syncfs");
    real_sync = dlsym(RTLD_NEXT, "sync");
    real_copy_file_range = dlsym(RTLD_NEXT, "copy_file_range");
    real_sync_file_range = dlsym(RTLD_NEXT, "sync_file_range");
    real_syscall = dlsym(RTLD_NEXT, "syscall");
    real_ioctl = dlsym(RTLD_NEXT, "ioctl");
    real_pread64 = dlsym(RTLD_NEXT, "pread64");
    const char *targets = getenv("TRACE_TARGETS");
    const char *dir = getenv("TRACE_DIR");
    if (!targets || !dir) return;
    char *list = strdup(targets);
    char *save = NULL;
    for (char *t = strtok_r(list, ":", &save); t && ntargets < MAX_TARGETS;
         t = strtok_r(NULL, ":", &save)) {
        struct stat st;
        if (stat(t, &st) != 0) {
            fprintf(stderr, "trace: cannot stat %s\n", t);
            abort();
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%d.log", dir, ntargets);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "trace: cannot open %s\n", path);
            abort();
        }
        snprintf(path, sizeof path, "%s/%d.count", dir, ntargets);
        int cfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (cfd < 0 || real_ftruncate64(cfd, sizeof(uint64_t)) != 0) {
            fprintf(stderr, "trace: cannot open %s\n", path);
            abort();
        }
        void *count = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
        if (count == MAP_FAILED) abort();
        close(cfd);
        tcount[ntargets] = count;
        tdev[ntargets] = st.st_dev;
        tino[ntargets] = st.st_ino;
        tlog[ntargets] = fd;
        ntargets++;
    }
    free(list);
}

static int target_of(int fd) {
    pthread_once(&once, init);
    struct stat st;
    if (ntargets == 0 || fstat(fd, &st) != 0) return -1;
    for (int i = 0; i < ntargets; i++)
        if (st.st_dev == tdev[i] && st.st_ino == tino[i]) return i;
    return -1;
}

static void emit(int t, char kind, uint64_t a, uint64_t b, uint64_t c, const struct iovec *iov,
                 int iovcnt, size_t data_len) {
    unsigned char head[25];
    head[0] = (unsigned char)kind;
    uint64_t v[3] = {a, b, c};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 8; j++) head[1 + 8 * k + j] = (unsigned char)(v[k] >> (8 * j));
    if (real_write(tlog[t], head, sizeof head) != (ssize_t)sizeof head) abort();
    size_t left = data_len;
    for (int i = 0; i < iovcnt && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
        const char *p = iov[i].iov_base;
        size_t done = 0;
        while (done < n) {
            ssize_t w = real_write(tlog[t], p + done, n - done);
            if (w <= 0) abort();
            done += (size_t)w;
        }
        left -= n;
    }
    __atomic_add_fetch(tcount[t], 1, __ATOMIC_SEQ_CST);
}

static void record_write(int fd, const struct iovec *iov, int iovcnt, off_t off, ssize_t done) {
    if (done <= 0) return;
    int t = target_of(fd);
    if (t < 0) return;
    pthread_mutex_lock(&mu);
    emit(t, 'W', (uint64_t)off, (uint64_t)done, 0, iov, iovcnt, (size_t)done);
    pthread_mutex_unlock(&mu);
}

static void record(int fd, char kind, uint64_t a, uint64_t b, uint64_t c) {
    int t = target_of(fd);
    if (t < 0) return;
    pthread_mutex_lock(&mu);
    emit(t, kind, a, b, c, NULL, 0, 0);
    pthread_mutex_unlock(&mu);
}

static uint64_t count_of(int t) {
    pthread_mutex_lock(&mu);
    uint64_t n = __atomic_load_n(tcount[t], __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&mu);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    pthread_once(&once, init);
    ssize_t r = real_pwrite64(fd, buf, n, off);
    struct iovec iov = {(void *)buf, n};
    record_write(fd, &iov, 1, off, r);
    return r;
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return pwrite64(fd, buf, n, off); }

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    pthread_once(&once, init);
    ssize_t r = real_pwritev(fd, iov, cnt, off);
    record_write(fd, iov, cnt, off, r);
    return r;
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    return pwritev64(fd, iov, cnt, off);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    pthread_once(&once, init);
    if (off == -1 && target_of(fd) >= 0) record(fd, 'X', 0, 0, 0);
    ssize_t r = real_pwritev2(fd, iov, cnt, off, flags);
    if (off != -1) record_write(fd, iov, cnt, off, r);
    return r;
}
ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    return pwritev64v2(fd, iov, cnt, off, flags);
}

ssize_t write(int fd, const void *buf, size_t n) {
    pthread_once(&once, init);
    if (target_of(fd) < 0) return real_write(fd, buf, n);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_write(fd, buf, n);
    struct iovec iov = {(void *)buf, n};
    if (off < 0 || (fcntl(fd, F_GETFL) & O_APPEND)) record(fd, 'X', 0, 0, 0);
    else record_write(fd, &iov, 1, off, r);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    pthread_once(&once, init);
    if (target_of(fd) < 0) return real_writev(fd, iov, cnt);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_writev(fd, iov, cnt);
    if (off < 0 || (fcntl(fd, F_GETFL) & O_APPEND)) record(fd, 'X', 0, 0, 0);
    else record_write(fd, iov, cnt, off, r);
    return r;
}

static int synced(int fd, int data_only) {
    pthread_once(&once, init);
    int t = target_of(fd);
    uint64_t first = t >= 0 ? count_of(t) : 0;
    int r = data_only ? real_fdatasync(fd) : real_fsync(fd);
    if (r == 0 && t >= 0) record(fd, 'S', first, 0, 0);
    return r;
}
int fsync(int fd) { return synced(fd, 0); }
int fdatasync(int fd) { return synced(fd, 1); }

int syncfs(int fd) {
    pthread_once(&once, init);
    uint64_t first[MAX_TARGETS];
    for (int t = 0; t < ntargets; t++) first[t] = count_of(t);
    int r = real_syncfs(fd);
    if (r == 0) {
        pthread_mutex_lock(&mu);
        for (int t = 0; t < ntargets; t++) emit(t, 'S', first[t], 0, 0, NULL, 0, 0);
        pthread_mutex_unlock(&mu);
    }
    return r;
}

void sync(void) {
    pthread_once(&once, init);
    uint64_t first[MAX_TARGETS];
    for (int t = 0; t < ntargets; t++) first[t] = count_of(t);
    real_sync();
    pthread_mutex_lock(&mu);
    for (int t = 0; t < ntargets; t++) emit(t, 'S', first[t], 0, 0, NULL, 0, 0);
    pthread_mutex_unlock(&mu);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags) {
    pthread_once(&once, init);
    /* Writes back without a cache flush: it makes nothing durable, so it is not a sync. */
    int r = real_sync_file_range(fd, off, n, flags);
    if (r == 0) record(fd, 'H', (uint64_t)off, (uint64_t)n, flags);
    return r;
}

int fallocate64(int fd, int mode, off_t off, off_t len) {
    pthread_once(&once, init);
    int r = real_fallocate64(fd, mode, off, len);
    if (r == 0) {
        int keep = (mode & FALLOC_FL_KEEP_SIZE) != 0;
        if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
            record(fd, 'Z', (uint64_t)off, (uint64_t)len, (uint64_t)keep);
        else if (mode & ~FALLOC_FL_KEEP_SIZE)
            record(fd, 'X', 0, 0, 0);
        else
            record(fd, 'A', (uint64_t)off, (uint64_t)len, (uint64_t)keep);
    }
    return r;
}
int fallocate(int fd, int mode, off_t off, off_t len) { return fallocate64(fd, mode, off, len); }

int posix_fallocate64(int fd, off_t off, off_t len) {
    pthread_once(&once, init);
    if (real_fallocate64(fd, 0, off, len) != 0) return errno;
    record(fd, 'A', (uint64_t)off, (uint64_t)len, 0);
    return 0;
}
int posix_fallocate(int fd, off_t off, off_t len) { return posix_fallocate64(fd, off, len); }

int ftruncate64(int fd, off_t size) {
    pthread_once(&once, init);
    int r = real_ftruncate64(fd, size);
    if (r == 0) record(fd, 'T', (uint64_t)size, 0, 0);
    return r;
}
int ftruncate(int fd, off_t size) { return ftruncate64(fd, size); }

/* Records what `len` bytes at `off` of `fd` hold now as a write: the result of a kernel copy
 * or clone into that range. */
static void record_range(int fd, off_t off, size_t len) {
    int t = target_of(fd);
    if (t < 0 || len == 0) return;
    char *buf = malloc(len);
    if (!buf) abort();
    size_t done = 0;
    while (done < len) {
        ssize_t r = real_pread64(fd, buf + done, len - done, off + (off_t)done);
        if (r <= 0) abort();
        done += (size_t)r;
    }
    struct iovec iov = {buf, len};
    pthread_mutex_lock(&mu);
    emit(t, 'W', (uint64_t)off, (uint64_t)len, 0, &iov, 1, len);
    pthread_mutex_unlock(&mu);
    free(buf);
}

ssize_t copy_file_range(int in, off_t *inoff, int out, off_t *outoff, size_t n, unsigned int f) {
    pthread_once(&once, init);
    off_t at = outoff ? *outoff : lseek(out, 0, SEEK_CUR);
    ssize_t r = real_copy_file_range(in, inoff, out, outoff, n, f);
    if (r > 0) {
        if (at < 0) record(out, 'X', 0, 0, 0);
        else record_range(out, at, (size_t)r);
    }
    return r;
}

/* Some callers (Rust's nix) make copy_file_range a raw syscall. */
long syscall(long number, ...) {
    pthread_once(&once, init);
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_copy_file_range)
        return copy_file_range((int)a[0], (off_t *)a[1], (int)a[2], (off_t *)a[3], (size_t)a[4],
                               (unsigned int)a[5]);
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int ioctl(int fd, unsigned long request, ...) {
    pthread_once(&once, init);
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = real_ioctl(fd, request, arg);
    if (r == 0 && request == FICLONERANGE) {
        const struct file_clone_range *c = arg;
        uint64_t len = c->src_length;
        if (len == 0) {
            struct stat st;
            if (fstat((int)c->src_fd, &st) != 0) abort();
            len = (uint64_t)st.st_size - c->src_offset;
        }
        record_range(fd, (off_t)c->dest_offset, (size_t)len);
    } else if (r == 0 && (request == FICLONE || request == FIDEDUPERANGE)) {
        record(fd, 'X', 0, 0, 0);
    }
    return r;
}
