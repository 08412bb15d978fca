// System calls that Node's fs module lacks, made synchronously for TFS:
// nanosecond utimensat (with UTIME_NOW/UTIME_OMIT), mknod, l*xattr, and renameat2.
// Errors are thrown like Node's own: err.code ('ENOENT'), err.errno (negative), err.syscall, err.path.
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PATH_CAP (PATH_MAX + 1)
#define XATTR_NAME_CAP 256
#define XATTR_VALUE_CAP 65536

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

// lutimensNs(path, atimeNs, mtimeNs): set both times without following a final symlink.
static napi_value lutimens_ns(napi_env env, napi_callback_info info) {
  ARGS(3)
  char path[PATH_CAP];
  struct timespec ts[2];
  if (get_string(env, argv[0], path, sizeof path) || get_time(env, argv[1], &ts[0]) || get_time(env, argv[2], &ts[1])) return NULL;
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) return throw_errno(env, errno, "utimensat", path);
  return NULL;
}

// futimensNs(fd, atimeNs, mtimeNs)
static napi_value futimens_ns(napi_env env, napi_callback_info info) {
  ARGS(3)
  int32_t fd;
  struct timespec ts[2];
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) { napi_throw_type_error(env, NULL, "expected an fd"); return NULL; }
  if (get_time(env, argv[1], &ts[0]) || get_time(env, argv[2], &ts[1])) return NULL;
  if (futimens(fd, ts) != 0) return throw_errno(env, errno, "futimens", NULL);
  return NULL;
}

// mknod(path, mode, rdev): fifos, sockets and device nodes.
static napi_value mknod_(napi_env env, napi_callback_info info) {
  ARGS(3)
  char path[PATH_CAP];
  uint32_t mode;
  int64_t rdev;
  if (get_string(env, argv[0], path, sizeof path)) return NULL;
  napi_get_value_uint32(env, argv[1], &mode);
  napi_get_value_int64(env, argv[2], &rdev);
  if (mknod(path, mode, (dev_t) rdev) != 0) return throw_errno(env, errno, "mknod", path);
  return NULL;
}

// lsetxattr(path, name, value: Buffer, flags)
static napi_value lsetxattr_(napi_env env, napi_callback_info info) {
  ARGS(4)
  char path[PATH_CAP], name[XATTR_NAME_CAP];
  void *data;
  size_t len;
  int32_t flags;
  if (get_string(env, argv[0], path, sizeof path) || get_string(env, argv[1], name, sizeof name)) return NULL;
  if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) { napi_throw_type_error(env, NULL, "expected a Buffer value"); return NULL; }
  napi_get_value_int32(env, argv[3], &flags);
  if (lsetxattr(path, name, data, len, flags) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

// The result of an xattr read of at most XATTR_VALUE_CAP bytes, as a Buffer (or a thrown error).
typedef ssize_t (*xattr_reader)(const char *path, const char *name, char *buf);
static ssize_t read_value(const char *path, const char *name, char *buf) { return lgetxattr(path, name, buf, XATTR_VALUE_CAP); }
static ssize_t read_names(const char *path, const char *name, char *buf) { (void) name; return llistxattr(path, buf, XATTR_VALUE_CAP); }

static napi_value xattr_buffer(napi_env env, xattr_reader reader, const char *syscall, const char *path, const char *name) {
  char *buf = malloc(XATTR_VALUE_CAP);
  if (!buf) return throw_errno(env, ENOMEM, syscall, path);
  ssize_t n = reader(path, name, buf);
  if (n < 0) { int e = errno; free(buf); return throw_errno(env, e, syscall, path); }
  napi_value out;
  void *dst;
  napi_create_buffer_copy(env, (size_t) n, buf, &dst, &out);
  free(buf);
  return out;
}

// lgetxattr(path, name) -> Buffer
static napi_value lgetxattr_(napi_env env, napi_callback_info info) {
  ARGS(2)
  char path[PATH_CAP], name[XATTR_NAME_CAP];
  if (get_string(env, argv[0], path, sizeof path) || get_string(env, argv[1], name, sizeof name)) return NULL;
  return xattr_buffer(env, read_value, "lgetxattr", path, name);
}

// llistxattr(path) -> Buffer of NUL-terminated names
static napi_value llistxattr_(napi_env env, napi_callback_info info) {
  ARGS(1)
  char path[PATH_CAP];
  if (get_string(env, argv[0], path, sizeof path)) return NULL;
  return xattr_buffer(env, read_names, "llistxattr", path, NULL);
}

// lremovexattr(path, name)
static napi_value lremovexattr_(napi_env env, napi_callback_info info) {
  ARGS(2)
  char path[PATH_CAP], name[XATTR_NAME_CAP];
  if (get_string(env, argv[0], path, sizeof path) || get_string(env, argv[1], name, sizeof name)) return NULL;
  if (lremovexattr(path, name) != 0) return throw_errno(env, errno, "lremovexattr", path);
  return NULL;
}

// fallocate(fd, mode, offset, length): FALLOC_FL_KEEP_SIZE (1), PUNCH_HOLE (2), ZERO_RANGE (16)...
static napi_value fallocate_(napi_env env, napi_callback_info info) {
  ARGS(4)
  int32_t fd, mode;
  int64_t offset, length;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_int32(env, argv[1], &mode);
  napi_get_value_int64(env, argv[2], &offset);
  napi_get_value_int64(env, argv[3], &length);
  if (fallocate(fd, mode, (off_t) offset, (off_t) length) != 0) return throw_errno(env, errno, "fallocate", NULL);
  return NULL;
}

// renameat2(from, to, flags): RENAME_NOREPLACE (1), RENAME_EXCHANGE (2).
static napi_value renameat2_(napi_env env, napi_callback_info info) {
  ARGS(3)
  char from[PATH_CAP], to[PATH_CAP];
  uint32_t flags;
  if (get_string(env, argv[0], from, sizeof from) || get_string(env, argv[1], to, sizeof to)) return NULL;
  napi_get_value_uint32(env, argv[2], &flags);
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, flags) != 0) return throw_errno(env, errno, "renameat2", from);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "lutimensNs", NULL, lutimens_ns, NULL, NULL, NULL, napi_default, NULL },
    { "futimensNs", NULL, futimens_ns, NULL, NULL, NULL, napi_default, NULL },
    { "mknod", NULL, mknod_, NULL, NULL, NULL, napi_default, NULL },
    { "lsetxattr", NULL, lsetxattr_, NULL, NULL, NULL, napi_default, NULL },
    { "lgetxattr", NULL, lgetxattr_, NULL, NULL, NULL, napi_default, NULL },
    { "llistxattr", NULL, llistxattr_, NULL, NULL, NULL, napi_default, NULL },
    { "lremovexattr", NULL, lremovexattr_, NULL, NULL, NULL, napi_default, NULL },
    { "renameat2", NULL, renameat2_, NULL, NULL, NULL, napi_default, NULL },
    { "fallocate", NULL, fallocate_, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
