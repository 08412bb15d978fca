// System calls that Node's fs module lacks, made synchronously for TFS.
//
// Every path call is relative to a directory descriptor (the store of a journal, the root of a
// replica): the path given is what a frame or FUSE carries, never prefixed with the tree's own
// absolute path, so a path of PATH_MAX-1 bytes inside the tree works however deep the tree lies.
// With `confined`, every component on the way is resolved beneath the directory and none may be
// a symlink (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), and the final
// component is never followed: a replica cannot be made to touch anything outside itself, even by
// a symlink swapped in between a check and a use (there is no check: the kernel resolves once).
//
// Errors are thrown like Node's own: err.code ('ENOENT'), err.errno (negative), err.syscall, err.path.
#include <node_api.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PATH_CAP (PATH_MAX + 1)
#define XATTR_NAME_CAP 256
#define XATTR_VALUE_CAP 65536
#define CONFINED (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  const char *name = strerrorname_np(err);
  char msg[PATH_CAP + 128];
  snprintf(msg, sizeof msg, "%s: %s, %s '%s'", name ? name : "EUNKNOWN", strerror(err), syscall, path ? path : "");
  napi_value m, e, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, e, "code", v);
  napi_create_int32(env, -err, &v);
  napi_set_named_property(env, e, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, e, "syscall", v);
  if (path) {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, e, "path", v);
  }
  napi_throw(env, e);
  return NULL;
}

static int get_string(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return -1;
  }
  if (len + 1 >= cap || strlen(buf) != len) {
    napi_throw_type_error(env, NULL, "string too long or holds a NUL");
    return -1;
  }
  return 0;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return -1;
  }
  return 0;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return -1;
  }
  return 0;
}

static int get_bool(napi_env env, napi_value v, bool *out) {
  if (napi_get_value_bool(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a boolean");
    return -1;
  }
  return 0;
}

// A time argument: BigInt nanoseconds since the epoch, -1n for UTIME_NOW, -2n for UTIME_OMIT.
static int get_time(napi_env env, napi_value v, struct timespec *ts) {
  int64_t ns;
  bool lossless;
  if (napi_get_value_bigint_int64(env, v, &ns, &lossless) != napi_ok || !lossless) {
    napi_throw_type_error(env, NULL, "expected a BigInt time in nanoseconds");
    return -1;
  }
  if (ns == -1) { ts->tv_sec = 0; ts->tv_nsec = UTIME_NOW; return 0; }
  if (ns == -2) { ts->tv_sec = 0; ts->tv_nsec = UTIME_OMIT; return 0; }
  ts->tv_sec = ns / 1000000000;
  ts->tv_nsec = ns % 1000000000;
  if (ts->tv_nsec < 0) { ts->tv_nsec += 1000000000; ts->tv_sec -= 1; }
  return 0;
}

#define ARGS(n) \
  size_t argc = n; napi_value argv[n]; \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL); \
  if (argc < n) { napi_throw_type_error(env, NULL, "missing arguments"); return NULL; }

static int openat2_(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve) {
  struct open_how how = { .flags = (uint64_t) flags, .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0, .resolve = resolve };
  return (int) syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

// A path inside a tree, resolved to a directory descriptor and a final name that *at() calls take
// without following it. Unconfined, the descriptor is the tree's and the name the whole relative
// path (one syscall, the kernel walks it); confined, the parent is opened by openat2 beneath the
// tree with no symlinks, and the name is the last component. '' names the tree itself.
typedef struct {
  int dirfd;
  bool own;  // dirfd was opened here and must be closed
  const char *name;
  char path[PATH_CAP];
} at_t;

static int at_resolve(napi_env env, napi_value vfd, napi_value vpath, napi_value vconfined, at_t *at) {
  int32_t fd;
  bool confined;
  if (get_int(env, vfd, &fd) || get_string(env, vpath, at->path, sizeof at->path) || get_bool(env, vconfined, &confined)) return -1;
  at->dirfd = fd;
  at->own = false;
  at->name = at->path;
  if (!confined || at->path[0] == '\0') return 0;
  char *slash = strrchr(at->path, '/');
  int parent;
  if (slash == NULL) {
    parent = openat2_(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0, CONFINED);
  } else {
    *slash = '\0';
    parent = openat2_(fd, at->path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, CONFINED);
    *slash = '/';
    at->name = slash + 1;
  }
  if (parent < 0) {
    throw_errno(env, errno, "openat2", at->path);
    return -1;
  }
  at->dirfd = parent;
  at->own = true;
  return 0;
}

static void at_done(at_t *at) {
  if (at->own) close(at->dirfd);
}

// Flags for *at() calls on the resolved name: '' (the tree itself) needs AT_EMPTY_PATH.
static int at_flags(const at_t *at, int flags) {
  return at->name[0] == '\0' ? flags | AT_EMPTY_PATH : flags;
}

// The resolved name, or "." for the tree itself (for calls without AT_EMPTY_PATH).
static const char *at_name(const at_t *at) {
  return at->name[0] ? at->name : ".";
}

#define AT_CALL(call, syscall_name) \
  int rc = (call); \
  int err = errno; \
  at_done(&at); \
  if (rc != 0) return throw_errno(env, err, syscall_name, at.path); \
  return NULL;

static napi_value fd_value(napi_env env, int fd) {
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

// openDir(path) -> fd: a tree's root directory, for the calls below.
static napi_value open_dir(napi_env env, napi_callback_info info) {
  ARGS(1)
  char path[PATH_CAP];
  if (get_string(env, argv[0], path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  return fd_value(env, fd);
}

// openAt(dirfd, path, confined, flags, mode) -> fd. Confined, the final component is not followed either.
static napi_value open_at(napi_env env, napi_callback_info info) {
  ARGS(5)
  int32_t dirfd, flags, mode;
  bool confined;
  char path[PATH_CAP];
  if (get_int(env, argv[0], &dirfd) || get_string(env, argv[1], path, sizeof path) || get_bool(env, argv[2], &confined) ||
      get_int(env, argv[3], &flags) || get_int(env, argv[4], &mode)) return NULL;
  const char *p = path[0] == '\0' ? "." : path;
  int fd = confined ? openat2_(dirfd, p, flags | O_NOFOLLOW | O_CLOEXEC, (mode_t) mode, CONFINED)
                    : openat(dirfd, p, flags | O_CLOEXEC, (mode_t) mode);
  if (fd < 0) return throw_errno(env, errno, confined ? "openat2" : "openat", path);
  return fd_value(env, fd);
}

// The stat fields JavaScript reads, in this order, into a BigInt64Array of STAT_FIELDS.
#define STAT_FIELDS 13
static napi_value fill_stat(napi_env env, napi_value array, const struct stat *st) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, array, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_bigint64_array || length < STAT_FIELDS) {
    napi_throw_type_error(env, NULL, "expected a BigInt64Array of 13");
    return NULL;
  }
  int64_t *o = data;
  o[0] = (int64_t) st->st_dev;
  o[1] = (int64_t) st->st_ino;
  o[2] = st->st_mode;
  o[3] = (int64_t) st->st_nlink;
  o[4] = st->st_uid;
  o[5] = st->st_gid;
  o[6] = (int64_t) st->st_rdev;
  o[7] = st->st_size;
  o[8] = st->st_blksize;
  o[9] = st->st_blocks;
  o[10] = st->st_atim.tv_sec * 1000000000LL + st->st_atim.tv_nsec;
  o[11] = st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
  o[12] = st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
  return NULL;
}

// statAt(dirfd, path, confined, out): lstat semantics.
static napi_value stat_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  at_t at;
  if (at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  struct stat st;
  int rc = fstatat(at.dirfd, at.name, &st, at_flags(&at, AT_SYMLINK_NOFOLLOW));
  int err = errno;
  at_done(&at);
  if (rc != 0) return throw_errno(env, err, "fstatat", at.path);
  return fill_stat(env, argv[3], &st);
}

// fstatInto(fd, out)
static napi_value fstat_into(napi_env env, napi_callback_info info) {
  ARGS(2)
  int32_t fd;
  if (get_int(env, argv[0], &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) return throw_errno(env, errno, "fstat", NULL);
  return fill_stat(env, argv[1], &st);
}

// readdirAt(dirfd, path, confined) -> names (without . and ..)
static napi_value readdir_at(napi_env env, napi_callback_info info) {
  ARGS(3)
  at_t at;
  if (at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  int fd = openat(at.dirfd, at_name(&at), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int err = errno;
  at_done(&at);
  if (fd < 0) return throw_errno(env, err, "openat", at.path);
  DIR *d = fdopendir(fd);
  if (d == NULL) { err = errno; close(fd); return throw_errno(env, err, "fdopendir", at.path); }
  napi_value out;
  napi_create_array(env, &out);
  uint32_t n = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0'))) continue;
    napi_value name;
    napi_create_string_utf8(env, e->d_name, NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, out, n++, name);
  }
  err = errno;
  closedir(d);
  if (err != 0) return throw_errno(env, err, "readdir", at.path);
  return out;
}

// readlinkAt(dirfd, path, confined) -> target
static napi_value readlink_at(napi_env env, napi_callback_info info) {
  ARGS(3)
  at_t at;
  if (at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  char target[PATH_CAP];
  ssize_t n = readlinkat(at.dirfd, at.name, target, sizeof target - 1);
  int err = errno;
  at_done(&at);
  if (n < 0) return throw_errno(env, err, "readlinkat", at.path);
  napi_value out;
  napi_create_string_utf8(env, target, (size_t) n, &out);
  return out;
}

// mkdirAt(dirfd, path, confined, mode)
static napi_value mkdir_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  int32_t mode;
  at_t at;
  if (get_int(env, argv[3], &mode) || at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  AT_CALL(mkdirat(at.dirfd, at.name, (mode_t) mode), "mkdirat")
}

// mknodAt(dirfd, path, confined, mode, rdev): fifos, sockets and device nodes.
static napi_value mknod_at(napi_env env, napi_callback_info info) {
  ARGS(5)
  int32_t mode;
  int64_t rdev;
  at_t at;
  if (get_int(env, argv[3], &mode) || get_i64(env, argv[4], &rdev) || at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  AT_CALL(mknodat(at.dirfd, at.name, (mode_t) mode, (dev_t) rdev), "mknodat")
}

// symlinkAt(target, dirfd, path, confined)
static napi_value symlink_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  char target[PATH_CAP];
  at_t at;
  if (get_string(env, argv[0], target, sizeof target) || at_resolve(env, argv[1], argv[2], argv[3], &at)) return NULL;
  AT_CALL(symlinkat(target, at.dirfd, at.name), "symlinkat")
}

// unlinkAt(dirfd, path, confined, isDir): unlink, or rmdir when isDir.
static napi_value unlink_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  bool dir;
  at_t at;
  if (get_bool(env, argv[3], &dir) || at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  AT_CALL(unlinkat(at.dirfd, at.name, dir ? AT_REMOVEDIR : 0), dir ? "rmdir" : "unlinkat")
}

// renameAt(dirfd, from, to, confined, flags): renameat2 (RENAME_NOREPLACE 1, RENAME_EXCHANGE 2).
static napi_value rename_at(napi_env env, napi_callback_info info) {
  ARGS(5)
  int32_t flags;
  at_t from, to;
  if (get_int(env, argv[4], &flags) || at_resolve(env, argv[0], argv[1], argv[3], &from)) return NULL;
  if (at_resolve(env, argv[0], argv[2], argv[3], &to)) { at_done(&from); return NULL; }
  int rc = renameat2(from.dirfd, from.name, to.dirfd, to.name, (unsigned) flags);
  int err = errno;
  at_done(&from);
  at_done(&to);
  if (rc != 0) return throw_errno(env, err, "renameat2", from.path);
  return NULL;
}

// linkAt(dirfd, from, to, confined): a hard link; a final symlink is linked, never followed.
static napi_value link_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  at_t from, to;
  if (at_resolve(env, argv[0], argv[1], argv[3], &from)) return NULL;
  if (at_resolve(env, argv[0], argv[2], argv[3], &to)) { at_done(&from); return NULL; }
  int rc = linkat(from.dirfd, from.name, to.dirfd, to.name, 0);
  int err = errno;
  at_done(&from);
  at_done(&to);
  if (rc != 0) return throw_errno(env, err, "linkat", to.path);
  return NULL;
}

// chownAt(dirfd, path, confined, uid, gid): -1 leaves one unchanged; a final symlink is not followed.
static napi_value chown_at(napi_env env, napi_callback_info info) {
  ARGS(5)
  int32_t uid, gid;
  at_t at;
  if (get_int(env, argv[3], &uid) || get_int(env, argv[4], &gid) || at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  AT_CALL(fchownat(at.dirfd, at.name, (uid_t) uid, (gid_t) gid, at_flags(&at, AT_SYMLINK_NOFOLLOW)), "fchownat")
}

// utimensAt(dirfd, path, confined, atimeNs, mtimeNs): a final symlink is not followed.
static napi_value utimens_at(napi_env env, napi_callback_info info) {
  ARGS(5)
  struct timespec ts[2];
  at_t at;
  if (get_time(env, argv[3], &ts[0]) || get_time(env, argv[4], &ts[1]) || at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  AT_CALL(utimensat(at.dirfd, at_name(&at), ts, AT_SYMLINK_NOFOLLOW), "utimensat")
}

// accessAt(dirfd, path, confined, mode)
static napi_value access_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  int32_t mode;
  at_t at;
  if (get_int(env, argv[3], &mode) || at_resolve(env, argv[0], argv[1], argv[2], &at)) return NULL;
  AT_CALL(faccessat(at.dirfd, at_name(&at), mode, AT_SYMLINK_NOFOLLOW), "faccessat")
}

// The entry itself (never what a final symlink points to) as an O_PATH descriptor, and a path
// that names it for the calls that have no *at() form: chmod and the xattr calls. Following
// /proc/self/fd/N lands on the entry, also when it is a symlink.
typedef struct {
  int fd;
  char proc[64];
} entry_t;

static int entry_open(napi_env env, at_t *at, entry_t *e, const char *syscall) {
  e->fd = openat(at->dirfd, at_name(at), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  int err = errno;
  at_done(at);
  if (e->fd < 0) {
    throw_errno(env, err, syscall, at->path);
    return -1;
  }
  snprintf(e->proc, sizeof e->proc, "/proc/self/fd/%d", e->fd);
  return 0;
}

#define ENTRY_CALL(call, syscall_name) \
  int rc = (call); \
  int err = errno; \
  close(e.fd); \
  if (rc != 0) return throw_errno(env, err, syscall_name, at.path); \
  return NULL;

// chmodAt(dirfd, path, confined, mode): Linux cannot chmod a symlink; EOPNOTSUPP, never followed.
static napi_value chmod_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  int32_t mode;
  at_t at;
  entry_t e;
  if (get_int(env, argv[3], &mode) || at_resolve(env, argv[0], argv[1], argv[2], &at) || entry_open(env, &at, &e, "chmod")) return NULL;
  struct stat st;
  if (fstat(e.fd, &st) != 0) { int err = errno; close(e.fd); return throw_errno(env, err, "fstat", at.path); }
  if (S_ISLNK(st.st_mode)) { close(e.fd); return throw_errno(env, EOPNOTSUPP, "chmod", at.path); }
  ENTRY_CALL(chmod(e.proc, (mode_t) mode), "chmod")
}

// setxattrAt(dirfd, path, confined, name, value: Buffer, flags)
static napi_value setxattr_at(napi_env env, napi_callback_info info) {
  ARGS(6)
  char name[XATTR_NAME_CAP];
  void *data;
  size_t len;
  int32_t flags;
  at_t at;
  entry_t e;
  if (get_string(env, argv[3], name, sizeof name) || get_int(env, argv[5], &flags)) return NULL;
  if (napi_get_buffer_info(env, argv[4], &data, &len) != napi_ok) { napi_throw_type_error(env, NULL, "expected a Buffer value"); return NULL; }
  if (at_resolve(env, argv[0], argv[1], argv[2], &at) || entry_open(env, &at, &e, "setxattr")) return NULL;
  ENTRY_CALL(setxattr(e.proc, name, data, len, flags), "setxattr")
}

// removexattrAt(dirfd, path, confined, name)
static napi_value removexattr_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  char name[XATTR_NAME_CAP];
  at_t at;
  entry_t e;
  if (get_string(env, argv[3], name, sizeof name)) return NULL;
  if (at_resolve(env, argv[0], argv[1], argv[2], &at) || entry_open(env, &at, &e, "removexattr")) return NULL;
  ENTRY_CALL(removexattr(e.proc, name), "removexattr")
}

// An xattr read of at most XATTR_VALUE_CAP bytes as a Buffer: one value (name) or the list of names (NULL).
static napi_value xattr_read(napi_env env, napi_value *argv, const char *name) {
  const char *syscall = name ? "getxattr" : "listxattr";
  at_t at;
  entry_t e;
  if (at_resolve(env, argv[0], argv[1], argv[2], &at) || entry_open(env, &at, &e, syscall)) return NULL;
  char *buf = malloc(XATTR_VALUE_CAP);
  if (!buf) { close(e.fd); return throw_errno(env, ENOMEM, syscall, at.path); }
  ssize_t n = name ? getxattr(e.proc, name, buf, XATTR_VALUE_CAP) : listxattr(e.proc, buf, XATTR_VALUE_CAP);
  int err = errno;
  close(e.fd);
  if (n < 0) { free(buf); return throw_errno(env, err, syscall, at.path); }
  napi_value out;
  void *dst;
  napi_create_buffer_copy(env, (size_t) n, buf, &dst, &out);
  free(buf);
  return out;
}

// getxattrAt(dirfd, path, confined, name) -> Buffer
static napi_value getxattr_at(napi_env env, napi_callback_info info) {
  ARGS(4)
  char name[XATTR_NAME_CAP];
  if (get_string(env, argv[3], name, sizeof name)) return NULL;
  return xattr_read(env, argv, name);
}

// listxattrAt(dirfd, path, confined) -> Buffer of NUL-terminated names
static napi_value listxattr_at(napi_env env, napi_callback_info info) {
  ARGS(3)
  return xattr_read(env, argv, NULL);
}

// futimensNs(fd, atimeNs, mtimeNs)
static napi_value futimens_ns(napi_env env, napi_callback_info info) {
  ARGS(3)
  int32_t fd;
  struct timespec ts[2];
  if (get_int(env, argv[0], &fd) || get_time(env, argv[1], &ts[0]) || get_time(env, argv[2], &ts[1])) return NULL;
  if (futimens(fd, ts) != 0) return throw_errno(env, errno, "futimens", NULL);
  return NULL;
}

// fallocate(fd, mode, offset, length): FALLOC_FL_KEEP_SIZE (1), PUNCH_HOLE (2), ZERO_RANGE (16)...
static napi_value fallocate_(napi_env env, napi_callback_info info) {
  ARGS(4)
  int32_t fd, mode;
  int64_t offset, length;
  if (get_int(env, argv[0], &fd) || get_int(env, argv[1], &mode) || get_i64(env, argv[2], &offset) || get_i64(env, argv[3], &length)) return NULL;
  if (fallocate(fd, mode, (off_t) offset, (off_t) length) != 0) return throw_errno(env, errno, "fallocate", NULL);
  return NULL;
}

// seekData(fd, offset) -> the first offset at or after `offset` that holds data (SEEK_DATA);
// throws ENXIO when there is none (only a hole, or the end, follows).
static napi_value seek_data(napi_env env, napi_callback_info info) {
  ARGS(2)
  int32_t fd;
  int64_t offset;
  if (get_int(env, argv[0], &fd) || get_i64(env, argv[1], &offset)) return NULL;
  off_t at = lseek(fd, (off_t) offset, SEEK_DATA);
  if (at < 0) return throw_errno(env, errno, "lseek", NULL);
  napi_value out;
  napi_create_int64(env, (int64_t) at, &out);
  return out;
}

// tryLock(fd) -> true when an exclusive flock(2) was taken, false when another open file holds one.
static napi_value try_lock(napi_env env, napi_callback_info info) {
  ARGS(1)
  int32_t fd;
  if (get_int(env, argv[0], &fd)) return NULL;
  bool locked = true;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return throw_errno(env, errno, "flock", NULL);
    locked = false;
  }
  napi_value out;
  napi_get_boolean(env, locked, &out);
  return out;
}

// syncfs(fd): flushes the whole filesystem holding fd.
static napi_value syncfs_(napi_env env, napi_callback_info info) {
  ARGS(1)
  int32_t fd;
  if (get_int(env, argv[0], &fd)) return NULL;
  if (syncfs(fd) != 0) return throw_errno(env, errno, "syncfs", NULL);
  return NULL;
}

// setPipeSize(fd, bytes) -> the pipe's capacity after F_SETPIPE_SZ (the old one when refused:
// above /proc/sys/fs/pipe-max-size for a user, or not a pipe: -1).
static napi_value set_pipe_size(napi_env env, napi_callback_info info) {
  ARGS(2)
  int32_t fd, bytes;
  if (get_int(env, argv[0], &fd) || get_int(env, argv[1], &bytes)) return NULL;
  int n = fcntl(fd, F_SETPIPE_SZ, bytes);
  if (n < 0) n = fcntl(fd, F_GETPIPE_SZ);
  napi_value out;
  napi_create_int32(env, n, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
#define FN(name, fn) { name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL }
  napi_property_descriptor props[] = {
    FN("openDir", open_dir),
    FN("openAt", open_at),
    FN("statAt", stat_at),
    FN("fstatInto", fstat_into),
    FN("readdirAt", readdir_at),
    FN("readlinkAt", readlink_at),
    FN("mkdirAt", mkdir_at),
    FN("mknodAt", mknod_at),
    FN("symlinkAt", symlink_at),
    FN("unlinkAt", unlink_at),
    FN("renameAt", rename_at),
    FN("linkAt", link_at),
    FN("chownAt", chown_at),
    FN("utimensAt", utimens_at),
    FN("accessAt", access_at),
    FN("chmodAt", chmod_at),
    FN("setxattrAt", setxattr_at),
    FN("removexattrAt", removexattr_at),
    FN("getxattrAt", getxattr_at),
    FN("listxattrAt", listxattr_at),
    FN("futimensNs", futimens_ns),
    FN("fallocate", fallocate_),
    FN("tryLock", try_lock),
    FN("seekData", seek_data),
    FN("syncfs", syncfs_),
    FN("setPipeSize", set_pipe_size),
  };
#undef FN
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
