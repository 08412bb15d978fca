// TFS: the store-order lock, the frame output and the native data path (order.c).
#ifndef TFS_ORDER_H
#define TFS_ORDER_H

#include <node_api.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/stat.h>

/** The main thread's store-order section (nested sections count once). */
void tfs_order_enter (void);
void tfs_order_leave (void);

/** A WRITE handled without JavaScript: returns 1 with *res set, or 0 when JavaScript must handle it. */
int tfs_native_write (uint64_t fh, const char *buf, size_t len, off_t offset, const uint32_t caller[3], int *res);

/** A READ handled without JavaScript: returns 1 with *res set, or 0 when JavaScript must handle it. */
int tfs_native_read (uint64_t fh, char *buf, size_t len, off_t offset, int *res);

/** Read-only requests answered from the store without JavaScript (1 with *res set, or 0). */
int tfs_native_getattr (const char *path, struct stat *st, int *res);
int tfs_native_fgetattr (const char *path, uint64_t fh, struct stat *st, int *res);
int tfs_native_flush (int *res);
int tfs_native_getxattr (const char *path, const char *name, char *value, size_t size, int *res);
int tfs_native_listxattr (const char *path, char *list, size_t size, int *res);
int tfs_native_readlink (const char *path, char *buf, size_t size, int *res);

/** Adds the JavaScript functions (orderEnter, outWrite, handle, ...) as the binding's `native` object. */
void tfs_order_export (napi_env env, napi_value exports);

#endif
