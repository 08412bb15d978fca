import Fuse from 'fuse-native';

/**
 * The store order (journal/fuse/order.c): libfuse threads write the store and the output natively
 * under one lock, so JavaScript takes the same lock for every section that calls the store and
 * emits frames. FUSE handlers already run inside it; work between requests (snapshot turns,
 * control requests, the end of the stream) wraps itself in `ordered`.
 */
export const native = Fuse.native;

/** Runs `fn` in the store order (nested calls take the lock once). */
export function ordered<T>(fn: () => T): T {
  native.orderEnter();
  try {
    return fn();
  } finally {
    native.orderLeave();
  }
}
