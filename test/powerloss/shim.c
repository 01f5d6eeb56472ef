/* LD_PRELOAD recorder for the power-loss tests: logs every call that changes durable state of a file under
 * $PRL_PL_ROOT (data with its bytes, size, names, syncs) to $PRL_PL_LOG, one record per call, appended with a
 * single writev on an O_APPEND descriptor so that records from threads and child processes never interleave.
 * Record: u32 type, u32 mode, u64 a, u64 b, u32 len1, u32 len2, then path1, path2, then b data bytes (writes).
 * Syncs are logged twice (begin before the call, end after it): a sync covers only what was logged before it began.
 * Kill points: with $PRL_PL_STOP_AT=N and $PRL_PL_COUNTER (a file), the process making the Nth durable change of
 * the run (any process: the count lives in the file, under flock) creates $PRL_PL_COUNTER.hit and stops itself
 * (SIGSTOP) right after the change; the test then kills the whole tree. $PRL_PL_LOG is optional then. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { T_WRITE = 1, T_TRUNCATE = 2, T_FALLOC = 3, T_SYNC_BEGIN = 4, T_SYNC_END = 5, T_RENAME = 6, T_UNLINK = 7,
       T_CREATE = 8, T_OPEN_TRUNC = 9, T_MKDIR = 10, T_RMDIR = 11, T_SYNC_ALL_BEGIN = 12, T_SYNC_ALL_END = 13,
       T_LINK = 14, T_UNSUPPORTED = 99 };

struct rec { uint32_t type, mode; uint64_t a, b; uint32_t len1, len2; } __attribute__((packed));

static int log_fd = -1;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *root;
static size_t root_len;

#define REAL(name) static __typeof__(name) *real_##name; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static long stop_at;
static const char *counter;

static int init(void) {
  if (root) return 1;
  const char *r = getenv("PRL_PL_ROOT");
  const char *l = getenv("PRL_PL_LOG");
  const char *s = getenv("PRL_PL_STOP_AT");
  counter = getenv("PRL_PL_COUNTER");
  stop_at = s && counter ? atol(s) : 0;
  if (!r || (!l && !stop_at)) return 0;
  pthread_mutex_lock(&log_lock);
  if (log_fd < 0 && l) log_fd = (int)syscall(SYS_openat, AT_FDCWD, l, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  pthread_mutex_unlock(&log_lock);
  root_len = strlen(r);
  root = r;
  return 1;
}

/* Counts one durable change of the run; at the chosen one, says so and stops this process. */
static void count_change(void) {
  if (!stop_at) return;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, counter, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  flock(fd, LOCK_EX);
  long n = 0;
  char text[32] = "";
  ssize_t got = syscall(SYS_pread64, fd, text, sizeof text - 1, 0);
  if (got > 0) { text[got] = 0; n = atol(text); }
  n++;
  int len = snprintf(text, sizeof text, "%ld\n", n);
  syscall(SYS_pwrite64, fd, text, (size_t)len, 0);
  flock(fd, LOCK_UN);
  close(fd);
  if (n == stop_at) {
    char hit[PATH_MAX];
    snprintf(hit, sizeof hit, "%s.hit", counter);
    int h = (int)syscall(SYS_openat, AT_FDCWD, hit, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (h >= 0) close(h);
    raise(SIGSTOP);
  }
}

static int inside(const char *path) {
  return path && strncmp(path, root, root_len) == 0 && (path[root_len] == '/' || path[root_len] == 0);
}

/* The current name of an open descriptor ("" when it is not under the root). */
static void fd_path(int fd, char *out) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, out, PATH_MAX - 1);
  out[n < 0 ? 0 : n] = 0;
  if (!inside(out)) out[0] = 0;
}

/* An absolute form of `path` relative to `dirfd` (no symlink resolution: names are what the log is about). */
static void abs_path(int dirfd, const char *path, char *out) {
  if (path[0] == '/') { snprintf(out, PATH_MAX, "%s", path); }
  else {
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) { if (!getcwd(base, sizeof base)) base[0] = 0; }
    else { char link[64]; snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd); ssize_t n = readlink(link, base, sizeof base - 1); base[n < 0 ? 0 : n] = 0; }
    snprintf(out, PATH_MAX, "%s/%s", base, path);
  }
  if (!inside(out)) out[0] = 0;
}

static void emit(uint32_t type, uint32_t mode, uint64_t a, uint64_t b, const char *p1, const char *p2, const struct iovec *data, int ndata) {
  struct rec r = { type, mode, a, b, (uint32_t)strlen(p1), p2 ? (uint32_t)strlen(p2) : 0 };
  struct iovec iov[3 + 1024];
  int n = 0;
  iov[n++] = (struct iovec){ &r, sizeof r };
  iov[n++] = (struct iovec){ (void *)p1, r.len1 };
  if (p2) iov[n++] = (struct iovec){ (void *)p2, r.len2 };
  for (int i = 0; i < ndata && n < 1027; i++) iov[n++] = data[i];
  int saved = errno;
  if (log_fd >= 0) {
    pthread_mutex_lock(&log_lock);
    syscall(SYS_writev, log_fd, iov, n);
    pthread_mutex_unlock(&log_lock);
  }
  if (type != T_SYNC_BEGIN && type != T_SYNC_ALL_BEGIN) count_change();
  errno = saved;
}

/* Logs `done` bytes of `iov` written at `offset`. */
static void log_write(int fd, const struct iovec *iov, int iovcnt, ssize_t done, off_t offset) {
  if (done <= 0 || !init()) return;
  char path[PATH_MAX];
  fd_path(fd, path);
  if (!path[0]) return;
  struct iovec parts[1024];
  int n = 0;
  size_t left = (size_t)done;
  for (int i = 0; i < iovcnt && left > 0 && n < 1024; i++) {
    size_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
    parts[n++] = (struct iovec){ iov[i].iov_base, take };
    left -= take;
  }
  emit(T_WRITE, 0, (uint64_t)offset, (uint64_t)done, path, NULL, parts, n);
}

static off_t after_write_offset(int fd, ssize_t done) { return lseek(fd, 0, SEEK_CUR) - done; }

ssize_t write(int fd, const void *buf, size_t count) {
  REAL(write);
  ssize_t done = real_write(fd, buf, count);
  if (done > 0 && init()) { struct iovec v = { (void *)buf, count }; log_write(fd, &v, 1, done, after_write_offset(fd, done)); }
  return done;
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
  REAL(pwrite);
  ssize_t done = real_pwrite(fd, buf, count, offset);
  struct iovec v = { (void *)buf, count };
  log_write(fd, &v, 1, done, offset);
  return done;
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
  REAL(pwrite64);
  ssize_t done = real_pwrite64(fd, buf, count, offset);
  struct iovec v = { (void *)buf, count };
  log_write(fd, &v, 1, done, offset);
  return done;
}
ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
  REAL(writev);
  ssize_t done = real_writev(fd, iov, iovcnt);
  if (done > 0 && init()) log_write(fd, iov, iovcnt, done, after_write_offset(fd, done));
  return done;
}
ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
  REAL(pwritev);
  ssize_t done = real_pwritev(fd, iov, iovcnt, offset);
  log_write(fd, iov, iovcnt, done, offset);
  return done;
}
ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
  REAL(pwritev64);
  ssize_t done = real_pwritev64(fd, iov, iovcnt, offset);
  log_write(fd, iov, iovcnt, done, offset);
  return done;
}
ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
  REAL(pwritev2);
  ssize_t done = real_pwritev2(fd, iov, iovcnt, offset, flags);
  if (done > 0 && init()) log_write(fd, iov, iovcnt, done, offset == -1 ? after_write_offset(fd, done) : offset);
  return done;
}

static void log_size(int fd, uint32_t type, uint32_t mode, uint64_t a, uint64_t b) {
  if (!init()) return;
  char path[PATH_MAX];
  fd_path(fd, path);
  if (path[0]) emit(type, mode, a, b, path, NULL, NULL, 0);
}
int ftruncate(int fd, off_t length) {
  REAL(ftruncate);
  int rc = real_ftruncate(fd, length);
  if (rc == 0) log_size(fd, T_TRUNCATE, 0, 0, (uint64_t)length);
  return rc;
}
int ftruncate64(int fd, off_t length) {
  REAL(ftruncate64);
  int rc = real_ftruncate64(fd, length);
  if (rc == 0) log_size(fd, T_TRUNCATE, 0, 0, (uint64_t)length);
  return rc;
}
int truncate(const char *p, off_t length) {
  REAL(truncate);
  int rc = real_truncate(p, length);
  if (rc == 0 && init()) { char path[PATH_MAX]; abs_path(AT_FDCWD, p, path); if (path[0]) emit(T_TRUNCATE, 0, 0, (uint64_t)length, path, NULL, NULL, 0); }
  return rc;
}
int fallocate(int fd, int mode, off_t offset, off_t len) {
  REAL(fallocate);
  int rc = real_fallocate(fd, mode, offset, len);
  if (rc == 0) log_size(fd, T_FALLOC, (uint32_t)mode, (uint64_t)offset, (uint64_t)len);
  return rc;
}
int fallocate64(int fd, int mode, off_t offset, off_t len) {
  REAL(fallocate64);
  int rc = real_fallocate64(fd, mode, offset, len);
  if (rc == 0) log_size(fd, T_FALLOC, (uint32_t)mode, (uint64_t)offset, (uint64_t)len);
  return rc;
}
int posix_fallocate(int fd, off_t offset, off_t len) {
  REAL(posix_fallocate);
  int rc = real_posix_fallocate(fd, offset, len);
  if (rc == 0) log_size(fd, T_FALLOC, 0, (uint64_t)offset, (uint64_t)len);
  return rc;
}
int posix_fallocate64(int fd, off_t offset, off_t len) {
  REAL(posix_fallocate64);
  int rc = real_posix_fallocate64(fd, offset, len);
  if (rc == 0) log_size(fd, T_FALLOC, 0, (uint64_t)offset, (uint64_t)len);
  return rc;
}

static int synced(int fd, int (*call)(int)) {
  char path[PATH_MAX] = "";
  if (init()) fd_path(fd, path);
  if (path[0]) emit(T_SYNC_BEGIN, 0, 0, 0, path, NULL, NULL, 0);
  int rc = call(fd);
  if (path[0] && rc == 0) emit(T_SYNC_END, 0, 0, 0, path, NULL, NULL, 0);
  return rc;
}
int fsync(int fd) { REAL(fsync); return synced(fd, real_fsync); }
int fdatasync(int fd) { REAL(fdatasync); return synced(fd, real_fdatasync); }
int syncfs(int fd) {
  REAL(syncfs);
  if (init()) emit(T_SYNC_ALL_BEGIN, 0, 0, 0, "", NULL, NULL, 0);
  int rc = real_syncfs(fd);
  if (init() && rc == 0) emit(T_SYNC_ALL_END, 0, 0, 0, "", NULL, NULL, 0);
  return rc;
}
void sync(void) {
  REAL(sync);
  if (init()) emit(T_SYNC_ALL_BEGIN, 0, 0, 0, "", NULL, NULL, 0);
  real_sync();
  if (init()) emit(T_SYNC_ALL_END, 0, 0, 0, "", NULL, NULL, 0);
}
int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
  REAL(sync_file_range);
  /* Not a durability guarantee (no metadata, no cache flush): logged as nothing. */
  return real_sync_file_range(fd, offset, nbytes, flags);
}

static void log_names(uint32_t type, int dir1, const char *a, int dir2, const char *b) {
  if (!init()) return;
  char p1[PATH_MAX], p2[PATH_MAX];
  abs_path(dir1, a, p1);
  if (b) abs_path(dir2, b, p2);
  if (!p1[0] && !(b && p2[0])) return;
  if (b && (!p1[0] || !p2[0])) { emit(T_UNSUPPORTED, type, 0, 0, p1[0] ? p1 : p2, NULL, NULL, 0); return; }
  emit(type, 0, 0, 0, p1, b ? p2 : NULL, NULL, 0);
}
int rename(const char *a, const char *b) { REAL(rename); int rc = real_rename(a, b); if (rc == 0) log_names(T_RENAME, AT_FDCWD, a, AT_FDCWD, b); return rc; }
int renameat(int da, const char *a, int db, const char *b) { REAL(renameat); int rc = real_renameat(da, a, db, b); if (rc == 0) log_names(T_RENAME, da, a, db, b); return rc; }
int renameat2(int da, const char *a, int db, const char *b, unsigned int flags) {
  REAL(renameat2);
  int rc = real_renameat2(da, a, db, b, flags);
  if (rc == 0) log_names(flags & 2 /* RENAME_EXCHANGE */ ? T_UNSUPPORTED : T_RENAME, da, a, db, b);
  return rc;
}
int link(const char *a, const char *b) { REAL(link); int rc = real_link(a, b); if (rc == 0) log_names(T_LINK, AT_FDCWD, a, AT_FDCWD, b); return rc; }
int linkat(int da, const char *a, int db, const char *b, int flags) { REAL(linkat); int rc = real_linkat(da, a, db, b, flags); if (rc == 0) log_names(T_LINK, da, a, db, b); return rc; }
int unlink(const char *a) { REAL(unlink); int rc = real_unlink(a); if (rc == 0) log_names(T_UNLINK, AT_FDCWD, a, 0, NULL); return rc; }
int unlinkat(int d, const char *a, int flags) {
  REAL(unlinkat);
  int rc = real_unlinkat(d, a, flags);
  if (rc == 0) log_names(flags & AT_REMOVEDIR ? T_RMDIR : T_UNLINK, d, a, 0, NULL);
  return rc;
}
int rmdir(const char *a) { REAL(rmdir); int rc = real_rmdir(a); if (rc == 0) log_names(T_RMDIR, AT_FDCWD, a, 0, NULL); return rc; }
int mkdir(const char *a, mode_t m) { REAL(mkdir); int rc = real_mkdir(a, m); if (rc == 0) log_names(T_MKDIR, AT_FDCWD, a, 0, NULL); return rc; }
int mkdirat(int d, const char *a, mode_t m) { REAL(mkdirat); int rc = real_mkdirat(d, a, m); if (rc == 0) log_names(T_MKDIR, d, a, 0, NULL); return rc; }

/* open with O_CREAT on a missing name creates a file; O_TRUNC on an existing one empties it. */
static int opened(int dirfd, const char *p, int flags, mode_t mode, int (*call)(int, const char *, int, mode_t)) {
  char path[PATH_MAX] = "";
  int existed = 1;
  if ((flags & (O_CREAT | O_TRUNC)) && init()) {
    abs_path(dirfd, p, path);
    struct stat st;
    if (path[0]) existed = fstatat(AT_FDCWD, path, &st, 0) == 0;
  }
  int fd = call(dirfd, p, flags, mode);
  if (fd >= 0 && path[0]) {
    if (!existed) emit(T_CREATE, 0, 0, 0, path, NULL, NULL, 0);
    else if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY) emit(T_OPEN_TRUNC, 0, 0, 0, path, NULL, NULL, 0);
  }
  return fd;
}
static int sys_openat(int dirfd, const char *p, int flags, mode_t mode) { return (int)syscall(SYS_openat, dirfd, p, flags, mode); }
static mode_t mode_arg(int flags, va_list ap) { return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0; }
int open(const char *p, int flags, ...) { va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap); return opened(AT_FDCWD, p, flags, m, sys_openat); }
int open64(const char *p, int flags, ...) { va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap); return opened(AT_FDCWD, p, flags, m, sys_openat); }
int openat(int d, const char *p, int flags, ...) { va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap); return opened(d, p, flags, m, sys_openat); }
int openat64(int d, const char *p, int flags, ...) { va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap); return opened(d, p, flags, m, sys_openat); }
int __open_2(const char *p, int flags) { return opened(AT_FDCWD, p, flags, 0, sys_openat); }
int __open64_2(const char *p, int flags) { return opened(AT_FDCWD, p, flags, 0, sys_openat); }
int __openat_2(int d, const char *p, int flags) { return opened(d, p, flags, 0, sys_openat); }
int __openat64_2(int d, const char *p, int flags) { return opened(d, p, flags, 0, sys_openat); }
int creat(const char *p, mode_t m) { return opened(AT_FDCWD, p, O_CREAT | O_WRONLY | O_TRUNC, m, sys_openat); }
int creat64(const char *p, mode_t m) { return opened(AT_FDCWD, p, O_CREAT | O_WRONLY | O_TRUNC, m, sys_openat); }

/* Copies inside the kernel would bypass the log: record them so that the replay refuses to guess. */
ssize_t copy_file_range(int in, off64_t *oi, int out, off64_t *oo, size_t len, unsigned int flags) {
  REAL(copy_file_range);
  ssize_t done = real_copy_file_range(in, oi, out, oo, len, flags);
  if (done > 0) log_size(out, T_UNSUPPORTED, 1, 0, 0);
  return done;
}
ssize_t sendfile(int out, int in, off_t *offset, size_t count) {
  REAL(sendfile);
  ssize_t done = real_sendfile(out, in, offset, count);
  if (done > 0) log_size(out, T_UNSUPPORTED, 2, 0, 0);
  return done;
}
