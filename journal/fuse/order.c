// TFS: the store-order lock, the journal's frame output, and the native data path.
//
// Order: a frame must reach the output in the order the store saw its operation. JavaScript runs
// every operation's store call and frame under this lock (the dispatch of a FUSE request to
// JavaScript takes it on the main thread, and so does JavaScript's own work between requests:
// snapshot turns, control requests). A WRITE on a handle JavaScript has already announced (its
// OPEN is out) needs nothing from JavaScript: the libfuse worker thread takes the same lock,
// pwrites the store and writes the frame, and answers the kernel without waking the main thread.
// Whoever holds the lock is the only one touching the store through the mount and the only one
// writing frames, so the output's order is the store's order, as it was with one thread. While
// anything needs JavaScript to see every write (a snapshot session, a replica's copy being
// tracked, a broken reader, a spool that syncs every frame), JavaScript turns the native path
// off, under the lock: every write after that goes to JavaScript, and none before it is still in
// flight. A spool is no reason: JavaScript lends its segment, and native frames are appended to
// it before they go out, as JavaScript's are (see `spool` below).
//
// Requests that change nothing are answered natively too, from the store: reads of an open file
// (pread), getattr, flush, getxattr, listxattr and readlink. They journal nothing, so they need no
// place in the order.

#define _GNU_SOURCE  // O_PATH
#include <node_api.h>
#include <zlib.h>
#include <pthread.h>
#include <poll.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <stdio.h>
#include <linux/sockios.h>

#include "order.h"

#define FRAME_HEADER 32
#define FRAME_WRITE 0x21
#define OFF_CHECKSUM 28
#define CHECK_EVERY 256

typedef struct {
  uint32_t id;        // the handle id frames use (JavaScript's, also before its OPEN is out)
  uint8_t open;       // the descriptor is an open file of the mount (reads may go native)
  uint8_t announced;  // its OPEN frame is out: writes may go native
  uint8_t append;     // opened with O_APPEND: the frame carries where the write landed
} tfs_handle_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int js_wants_native = 0;  // what JavaScript asked for (nativeWrites); native_on may be off meanwhile
static int main_depth = 0;  // touched on the main thread only

// Shared with JavaScript (a BigUint64Array over this memory): [0] the next frame's sequence number.
static uint64_t shared_state[1];
static volatile int native_on = 0;

static tfs_handle_t *handles = NULL;
static size_t handle_cap = 0;

// The store's root directory (-1: none yet): read-only requests are answered from it natively.
static int store_fd = -1;

// The spool (tfs-journal --spool): JavaScript lends the segment being appended to, and a native
// frame goes there before it goes to the output, as JavaScript's frames do. A frame that does not
// fit in the segment goes through JavaScript (which starts the next one). A failed append is cut
// back and the frame kept, and native writes stop: JavaScript appends it again (making room, or
// saying the spool broke) before anything else touches the spool.
static struct {
  int required;             // there is a working spool: no native frame without it
  int seg, idx;             // the lent segment and its index (-1: not lent)
  uint64_t first, size, last, limit;
  uint64_t appended;        // native appends since JavaScript last took the segment back
  int failed;               // errno of the append that failed (0: none)
  uint8_t *failed_frame;
  size_t failed_len;
} spool = { 0, -1, -1, 0, 0, 0, 0, 0, 0, NULL, 0 };

// The output and what is known of its delivery.
enum { KIND_OTHER = 0, KIND_PIPE = 1, KIND_SOCKET = 2 };
static int out_fd = -1, out_kind = KIND_OTHER, out_broken = 0;
static uint64_t out_written = 0, out_delivered = 0;
static uint64_t *pend_seq = NULL, *pend_end = NULL;
static size_t pend_head = 0, pend_len = 0, pend_cap = 0;
static int64_t last_confirmed = -1;

void tfs_order_enter (void) {
  if (main_depth++ == 0) pthread_mutex_lock(&lock);
}

void tfs_order_leave (void) {
  if (--main_depth == 0) pthread_mutex_unlock(&lock);
}

// What the reader has taken: the bytes written less those still unread in a pipe; for a socket
// only "everything" when its queue is empty; a file or /dev/null takes everything at once.
static void out_refresh (void) {
  int unread = -1;
  if (out_kind == KIND_PIPE && ioctl(out_fd, FIONREAD, &unread) == 0) out_delivered = out_written - (uint64_t) unread;
  else if (out_kind == KIND_OTHER || (out_kind == KIND_SOCKET && !out_broken && ioctl(out_fd, SIOCOUTQ, &unread) == 0 && unread == 0)) out_delivered = out_written;
  while (pend_head < pend_len && pend_end[pend_head] <= out_delivered) last_confirmed = (int64_t) pend_seq[pend_head++];
  if (pend_head > 4096 && pend_head * 2 > pend_len) {
    memmove(pend_seq, pend_seq + pend_head, (pend_len - pend_head) * sizeof(uint64_t));
    memmove(pend_end, pend_end + pend_head, (pend_len - pend_head) * sizeof(uint64_t));
    pend_len -= pend_head;
    pend_head = 0;
  }
}

/** Skips `n` bytes written of the parts `*iov` (`*count` of them). */
static void iov_advance (struct iovec **iov, int *count, size_t n) {
  while (*count > 0 && n >= (*iov)[0].iov_len) {
    n -= (*iov)[0].iov_len;
    (*iov)++;
    (*count)--;
  }
  if (*count > 0) {
    (*iov)[0].iov_base = (char *) (*iov)[0].iov_base + n;
    (*iov)[0].iov_len -= n;
  }
}

// Writes one frame (the lock held), whole: a blocking write is the journal's backpressure. Returns
// 0, or the errno that broke the output (after which nothing more is written).
static int out_write (struct iovec *iov, int count, uint64_t seq) {
  shared_state[0] = seq + 1;
  if (out_broken) return out_broken;
  size_t total = 0;
  for (int i = 0; i < count; i++) total += iov[i].iov_len;
  if (pend_len == pend_cap) {
    size_t cap = pend_cap ? pend_cap * 2 : 8192;
    uint64_t *s = realloc(pend_seq, cap * sizeof(uint64_t)), *e = s ? realloc(pend_end, cap * sizeof(uint64_t)) : NULL;
    if (s) pend_seq = s;
    if (e) {
      pend_end = e;
      pend_cap = cap;
    }
  }
  // Without memory to note it, the frame still goes out: only what the reader took is known less well.
  if (pend_len < pend_cap) {
    pend_seq[pend_len] = seq;
    pend_end[pend_len++] = out_written + total;
  }
  while (count > 0) {
    ssize_t n = writev(out_fd, iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        // stdout may have been left non-blocking by whoever shares it: wait for room.
        struct pollfd p = { .fd = out_fd, .events = POLLOUT };
        poll(&p, 1, 100);
        continue;
      }
      out_broken = errno;
      if (out_kind == KIND_PIPE) out_refresh();  // a pipe still tells what its dead reader never took
      return out_broken;
    }
    out_written += (uint64_t) n;
    iov_advance(&iov, &count, (size_t) n);
  }
  if (pend_len - pend_head >= CHECK_EVERY) out_refresh();
  return 0;
}

static tfs_handle_t *handle_of (uint64_t fh) {
  return fh < handle_cap ? &handles[fh] : NULL;
}

// Appends one frame to the lent segment (the lock held); 0, or the errno it failed with.
static int spool_append (const struct iovec *iov, int count, size_t length, uint64_t seq) {
  const int count0 = count;
  struct iovec rest[3];
  memcpy(rest, iov, count * sizeof(struct iovec));
  struct iovec *r = rest;
  off_t start = (off_t) spool.size;
  size_t done = 0;
  int err = 0;
  while (done < length) {
    ssize_t n = pwritev(spool.seg, r, count, start + (off_t) done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += (size_t) n;
    iov_advance(&r, &count, (size_t) n);
  }
  off_t entry_at = (off_t) ((seq - spool.first) * 8);
  if (err == 0) {
    uint8_t entry[8];
    for (int i = 0; i < 8; i++) entry[i] = (uint8_t) ((spool.size + length) >> (8 * i));
    if (pwrite(spool.idx, entry, 8, entry_at) != 8) err = errno ? errno : EIO;
  }
  if (err != 0) {
    // Never part of a frame in the log; the frame is kept for JavaScript to append again.
    if (ftruncate(spool.seg, start) != 0 || ftruncate(spool.idx, entry_at) != 0) { /* the next open cuts the tail back */ }
    spool.failed_frame = malloc(length);
    if (spool.failed_frame != NULL) {
      size_t at = 0;
      for (int i = 0; i < count0 && at < length; i++) {
        if (iov[i].iov_len > 0) memcpy(spool.failed_frame + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
      }
      spool.failed_len = length;
    }
    spool.failed = err;
    return err;
  }
  spool.size += length;
  spool.last = seq;
  spool.appended++;
  return 0;
}

static size_t put_uint (uint8_t *p, uint64_t v) {
  if (v < 128) { p[0] = (uint8_t) v; return 1; }
  if (v <= 0xff) { p[0] = 0xcc; p[1] = (uint8_t) v; return 2; }
  if (v <= 0xffff) { p[0] = 0xcd; p[1] = v >> 8; p[2] = v; return 3; }
  if (v <= 0xffffffffull) { p[0] = 0xce; for (int i = 0; i < 4; i++) p[1 + i] = v >> (24 - 8 * i); return 5; }
  p[0] = 0xcf;
  for (int i = 0; i < 8; i++) p[1 + i] = v >> (56 - 8 * i);
  return 9;
}

static void put_le (uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (uint8_t) (v >> (8 * i));
}

/** Whether a frame of `data` bytes (metadata at most 64) fits where it must go first: the spool's segment. */
static int room_for (size_t data) {
  return !spool.required || (spool.seg >= 0 && spool.size + FRAME_HEADER + 64 + data + 15 <= spool.limit);
}

/**
 * Emits one frame (the lock held): `head` holds FRAME_HEADER bytes of room and then `ml` bytes of
 * metadata; `data` (n bytes) follows from where it lies. Numbered, checksummed, appended to the
 * spool, written out. A failure of either turns the native path off: JavaScript takes it from there.
 */
static void emit_frame (uint8_t type, uint8_t *head, size_t ml, const void *data, size_t n) {
  size_t body = FRAME_HEADER + ml + n;
  size_t length = (body + 15) & ~(size_t) 15;
  uint64_t seq = shared_state[0];
  memset(head, 0, FRAME_HEADER);
  put_le(head, length, 4);
  head[4] = type;
  put_le(head + 6, ml, 2);
  put_le(head + 8, seq, 8);
  put_le(head + 16, (uint64_t) n, 4);
  uLong c = crc32(0L, head, OFF_CHECKSUM);
  c = crc32(c, head + FRAME_HEADER, (uInt) ml);
  if (n > 0) c = crc32(c, (const Bytef *) data, (uInt) n);
  put_le(head + OFF_CHECKSUM, c, 4);
  static const uint8_t zeros[16] = {0};
  struct iovec iov[3] = {
    { head, FRAME_HEADER + ml },
    { (void *) data, n },
    { (void *) zeros, length - body },
  };
  // Empty parts are harmless to writev; the spool copy of a failed append skips them too.
  if (spool.required && spool_append(iov, 3, length, seq) != 0) native_on = 0;
  if (out_write(iov, 3, seq) != 0) native_on = 0;  // JavaScript reports it on its next frame
}

/** The caller tag {c: [pid, uid, gid]} (msgpack key and value) at `m`. */
static size_t put_caller (uint8_t *m, const uint32_t caller[3]) {
  size_t ml = 0;
  m[ml++] = 0xa1; m[ml++] = 'c'; m[ml++] = 0x93;
  for (int i = 0; i < 3; i++) ml += put_uint(m + ml, caller[i]);
  return ml;
}

int tfs_native_write (uint64_t fh, const char *buf, size_t len, off_t offset, const uint32_t caller[3], int *res) {
  if (!native_on) return 0;
  pthread_mutex_lock(&lock);
  tfs_handle_t *h = handle_of(fh);
  if (!native_on || h == NULL || !h->announced || !room_for(len)) {
    pthread_mutex_unlock(&lock);
    return 0;
  }
  ssize_t n;
  if (h->append) {
    // The store appends wherever the offset says: the frame carries where the data landed.
    struct stat st;
    n = fstat((int) fh, &st);
    if (n == 0) {
      offset = st.st_size;
      n = write((int) fh, buf, len);
    }
  } else {
    n = pwrite((int) fh, buf, len, offset);
  }
  if (n < 0) {
    *res = -errno;
    pthread_mutex_unlock(&lock);
    return 1;
  }
  // Metadata {h: id, o: offset, c: [pid, uid, gid]} in plain msgpack, as shared/ops.ts has it.
  uint8_t head[FRAME_HEADER + 64];
  uint8_t *m = head + FRAME_HEADER;
  size_t ml = 0;
  m[ml++] = 0x83;
  m[ml++] = 0xa1; m[ml++] = 'h'; ml += put_uint(m + ml, h->id);
  m[ml++] = 0xa1; m[ml++] = 'o'; ml += put_uint(m + ml, (uint64_t) offset);
  ml += put_caller(m + ml, caller);
  emit_frame(FRAME_WRITE, head, ml, buf, (size_t) n);
  *res = (int) n;
  pthread_mutex_unlock(&lock);
  return 1;
}

int tfs_native_read (uint64_t fh, char *buf, size_t len, off_t offset, int *res) {
  // A read journals nothing and takes no lock (it never waits behind a write blocked on a full
  // output). Every file handle is a store descriptor (open and create answer with it), and it
  // stays open while the kernel has a read in flight on it: RELEASE comes after every read.
  if (store_fd < 0) return 0;
  ssize_t n = pread((int) fh, buf, len, offset);
  *res = n < 0 ? -errno : (int) n;
  return 1;
}

// ---- Read-only requests: answered from the store, natively (they journal nothing) ----

/** The store-relative path of a FUSE path ("." for the root). */
static const char *store_path (const char *path) {
  while (*path == '/') path++;
  return *path ? path : ".";
}

int tfs_native_getattr (const char *path, struct stat *st, int *res) {
  if (store_fd < 0 || path == NULL) return 0;
  *res = fstatat(store_fd, store_path(path), st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
  return 1;
}

int tfs_native_fgetattr (const char *path, uint64_t fh, struct stat *st, int *res) {
  if (store_fd < 0) return 0;
  // A file with a name answers by its name: the handle the channel attached to a GETATTR is not
  // pinned by the kernel, and its descriptor may be closed and open again for another file.
  if (path != NULL) return tfs_native_getattr(path, st, res);
  // A file whose last name is gone answers from its descriptor, checked and used under the lock
  // (a RELEASE, which closes it, takes the lock too).
  pthread_mutex_lock(&lock);
  tfs_handle_t *h = handle_of(fh);
  int open = h != NULL && h->open;
  if (open) *res = fstat((int) fh, st) == 0 ? 0 : -errno;
  pthread_mutex_unlock(&lock);
  return open;
}

int tfs_native_flush (int *res) {
  // A close journals nothing (RELEASE does, once the last descriptor goes) and the store's data
  // is written already: nothing to do, without a trip to JavaScript.
  if (store_fd < 0) return 0;
  *res = 0;
  return 1;
}

/** An entry's extended attributes are read through an O_PATH descriptor (there is no getxattrat). */
static int xattr_entry (const char *path, char proc[64]) {
  int fd = openat(store_fd, store_path(path), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) snprintf(proc, 64, "/proc/self/fd/%d", fd);
  return fd;
}

int tfs_native_getxattr (const char *path, const char *name, char *value, size_t size, int *res) {
  if (store_fd < 0 || path == NULL) return 0;
  char proc[64];
  int fd = xattr_entry(path, proc);
  if (fd < 0) {
    *res = -errno;
    return 1;
  }
  ssize_t n = getxattr(proc, name, value, size);
  *res = n < 0 ? -errno : (int) n;
  close(fd);
  return 1;
}

int tfs_native_listxattr (const char *path, char *list, size_t size, int *res) {
  if (store_fd < 0 || path == NULL) return 0;
  char proc[64];
  int fd = xattr_entry(path, proc);
  if (fd < 0) {
    *res = -errno;
    return 1;
  }
  ssize_t n = listxattr(proc, list, size);
  *res = n < 0 ? -errno : (int) n;
  close(fd);
  return 1;
}

int tfs_native_readlink (const char *path, char *buf, size_t size, int *res) {
  if (store_fd < 0 || path == NULL || size == 0) return 0;
  ssize_t n = readlinkat(store_fd, store_path(path), buf, size - 1);
  if (n < 0) {
    *res = -errno;
    return 1;
  }
  buf[n] = '\0';  // libfuse wants it NUL-terminated (and truncated to fit)
  *res = 0;
  return 1;
}

// ---- JavaScript side (all called on the main thread) ----

#define ARGS(n) size_t argc = n; napi_value argv[n]; napi_get_cb_info(env, info, &argc, argv, NULL, NULL);

static napi_value undefined (napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// orderEnter(), orderLeave(): JavaScript's store-order sections (nested ones count once).
static napi_value js_order_enter (napi_env env, napi_callback_info info) {
  tfs_order_enter();
  return undefined(env);
}

static napi_value js_order_leave (napi_env env, napi_callback_info info) {
  tfs_order_leave();
  return undefined(env);
}

// outOpen(fd, kind): makes fd the output (0 other, 1 pipe, 2 socket), from a clean state; returns
// the memory shared with JavaScript (a BigUint64Array: [0] = the next sequence number).
static napi_value js_out_open (napi_env env, napi_callback_info info) {
  ARGS(2)
  tfs_order_enter();
  napi_get_value_int32(env, argv[0], &out_fd);
  napi_get_value_int32(env, argv[1], &out_kind);
  native_on = 0;
  out_broken = 0;
  out_written = out_delivered = 0;
  pend_head = pend_len = 0;
  last_confirmed = -1;
  spool.required = 0;
  spool.seg = spool.idx = -1;
  tfs_order_leave();
  napi_value ab;
  napi_create_external_arraybuffer(env, shared_state, sizeof shared_state, NULL, NULL, &ab);
  return ab;
}

// outWrite(parts[], seq) -> 0 or the errno that broke the output. The caller holds the order.
static napi_value js_out_write (napi_env env, napi_callback_info info) {
  ARGS(2)
  uint32_t count;
  napi_get_array_length(env, argv[0], &count);
  struct iovec iov[8];
  if (count > 8) {
    napi_throw_range_error(env, NULL, "outWrite: a frame comes in at most 8 parts");
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value part;
    napi_get_element(env, argv[0], i, &part);
    napi_typedarray_type type;
    size_t length, offset;
    void *data;
    napi_value ab;
    napi_get_typedarray_info(env, part, &type, &length, &data, &ab, &offset);
    iov[i].iov_base = data;
    iov[i].iov_len = length;
  }
  uint64_t seq;
  bool lossless;
  napi_get_value_bigint_uint64(env, argv[1], &seq, &lossless);
  napi_value out;
  napi_create_int32(env, out_write(iov, (int) count, seq), &out);
  return out;
}

// outStatus() -> [errno that broke it or 0, last sequence number known taken or -1n, first sequence
// number written and not known taken or -1n], after looking at what the reader has taken.
static napi_value js_out_status (napi_env env, napi_callback_info info) {
  if (!out_broken || out_kind != KIND_SOCKET) out_refresh();
  napi_value arr, v;
  napi_create_array_with_length(env, 3, &arr);
  napi_create_int32(env, out_broken, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_bigint_int64(env, last_confirmed, &v);
  napi_set_element(env, arr, 1, v);
  napi_create_bigint_int64(env, pend_head < pend_len ? (int64_t) pend_seq[pend_head] : -1, &v);
  napi_set_element(env, arr, 2, v);
  return arr;
}

// nativeWrites(on): whether writes on announced handles may bypass JavaScript. The caller holds the order.
static napi_value js_native_writes (napi_env env, napi_callback_info info) {
  ARGS(1)
  bool on;
  napi_get_value_bool(env, argv[0], &on);
  js_wants_native = on;
  native_on = on && !out_broken && !spool.failed;
  return undefined(env);
}

// handle(fd, id, append, announced): fd is an open file of the mount, with the handle id frames
// use; announced once its OPEN is out. The caller holds the order. handleClosed(fd): before the
// descriptor is closed.
static napi_value js_handle (napi_env env, napi_callback_info info) {
  ARGS(4)
  int32_t fd;
  uint32_t id;
  bool append, announced;
  napi_get_value_int32(env, argv[0], &fd);
  napi_get_value_uint32(env, argv[1], &id);
  napi_get_value_bool(env, argv[2], &append);
  napi_get_value_bool(env, argv[3], &announced);
  if (fd < 0) return undefined(env);
  if ((size_t) fd >= handle_cap) {
    size_t cap = handle_cap ? handle_cap : 1024;
    while (cap <= (size_t) fd) cap *= 2;
    tfs_handle_t *grown = realloc(handles, cap * sizeof(tfs_handle_t));
    if (grown == NULL) return undefined(env);  // the write path stays in JavaScript for this one
    memset(grown + handle_cap, 0, (cap - handle_cap) * sizeof(tfs_handle_t));
    handles = grown;
    handle_cap = cap;
  }
  handles[fd].id = id;
  handles[fd].open = 1;
  handles[fd].announced = announced;
  handles[fd].append = append;
  return undefined(env);
}

static napi_value js_handle_closed (napi_env env, napi_callback_info info) {
  ARGS(1)
  int32_t fd;
  napi_get_value_int32(env, argv[0], &fd);
  if (fd >= 0 && (size_t) fd < handle_cap) memset(&handles[fd], 0, sizeof(tfs_handle_t));
  return undefined(env);
}

// spoolLend(segFd, idxFd, first, size, last, limit): the spool's segment is lent (segFd -1: there
// is a spool but no segment yet). spoolNone(): no spool (or a broken one): frames only go out.
static napi_value js_spool_lend (napi_env env, napi_callback_info info) {
  ARGS(6)
  bool lossless;
  int64_t size, limit;
  napi_get_value_int32(env, argv[0], &spool.seg);
  napi_get_value_int32(env, argv[1], &spool.idx);
  napi_get_value_bigint_uint64(env, argv[2], &spool.first, &lossless);
  napi_get_value_int64(env, argv[3], &size);
  napi_get_value_bigint_uint64(env, argv[4], &spool.last, &lossless);
  napi_get_value_int64(env, argv[5], &limit);
  spool.size = (uint64_t) size;
  spool.limit = (uint64_t) limit;
  spool.required = 1;
  spool.appended = 0;
  return undefined(env);
}

static napi_value js_spool_none (napi_env env, napi_callback_info info) {
  spool.required = 0;
  spool.seg = spool.idx = -1;
  return undefined(env);
}

// spoolReclaim() -> [size, last seq, native appends, errno of a failed append or 0, its frame or
// null]: takes the segment back (no native frame until it is lent again).
static napi_value js_spool_reclaim (napi_env env, napi_callback_info info) {
  napi_value arr, v;
  napi_create_array_with_length(env, 5, &arr);
  napi_create_int64(env, (int64_t) spool.size, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_bigint_uint64(env, spool.last, &v);
  napi_set_element(env, arr, 1, v);
  napi_create_int64(env, (int64_t) spool.appended, &v);
  napi_set_element(env, arr, 2, v);
  napi_create_int32(env, spool.failed, &v);
  napi_set_element(env, arr, 3, v);
  if (spool.failed_frame != NULL) {
    void *copy;
    napi_create_buffer_copy(env, spool.failed_len, spool.failed_frame, &copy, &v);
    free(spool.failed_frame);
    spool.failed_frame = NULL;
  } else {
    napi_get_null(env, &v);
  }
  napi_set_element(env, arr, 4, v);
  spool.seg = spool.idx = -1;
  spool.appended = 0;
  if (spool.failed) {
    // JavaScript appends the frame again now: native writes may go on (or stop with the spool).
    spool.failed = 0;
    native_on = js_wants_native && !out_broken;
  }
  return arr;
}

// storeRoot(fd): the store's root directory; from now on read-only requests are answered natively.
static napi_value js_store_root (napi_env env, napi_callback_info info) {
  ARGS(1)
  napi_get_value_int32(env, argv[0], &store_fd);
  return undefined(env);
}

void tfs_order_export (napi_env env, napi_value exports) {
#define FN(name, fn) { name, NULL, fn, NULL, NULL, NULL, napi_default, NULL }
  napi_property_descriptor props[] = {
    FN("orderEnter", js_order_enter), FN("orderLeave", js_order_leave),
    FN("outOpen", js_out_open), FN("outWrite", js_out_write), FN("outStatus", js_out_status),
    FN("nativeWrites", js_native_writes), FN("handle", js_handle), FN("handleClosed", js_handle_closed),
    FN("storeRoot", js_store_root),
    FN("spoolLend", js_spool_lend), FN("spoolNone", js_spool_none), FN("spoolReclaim", js_spool_reclaim),
  };
#undef FN
  // One object, `binding.native`, which index.js hands on as Fuse.native without listing it again.
  napi_value native;
  napi_create_object(env, &native);
  napi_define_properties(env, native, sizeof props / sizeof props[0], props);
  napi_set_named_property(env, exports, "native", native);
}
