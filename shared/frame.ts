/**
 * Frame layout, shared by encoder, decoder and anyone who routes frames blind.
 * See PROTOCOL.md for the byte diagrams. All integers are little-endian.
 *
 *   0  u32 length      whole frame in bytes, a multiple of 16
 *   4  u8  type        FrameType
 *   5  u8  flags       0 in protocol version 1
 *   6  u16 metaLength  bytes of msgpack metadata at offset 32
 *   8  u64 seq         sequence number (stream header 0, operations from 1)
 *  16  u32 dataLength  bytes of raw data after the metadata
 *  20  u32 reserved    0
 *  24  u32 reserved    0
 *  28  u32 checksum    CRC-32 of bytes [0, 28) and of metadata + data
 *  32  metadata, data, zero padding to the next multiple of 16
 */
export const ALIGN = 16;
/** The routing header: enough to forward a frame blind. */
export const ROUTING_HEADER_SIZE = 16;
/** Routing header plus envelope (data length, checksum). */
export const HEADER_SIZE = 32;

export const Offset = {
  LENGTH: 0,
  TYPE: 4,
  FLAGS: 5,
  META_LENGTH: 6,
  SEQ: 8,
  DATA_LENGTH: 16,
  RESERVED1: 20,
  RESERVED2: 24,
  CHECKSUM: 28,
} as const;

/** Documented caps; a decoder refuses anything larger. */
export const Cap = {
  /** Whole frame: 16 MiB. */
  FRAME: 16 * 1024 * 1024,
  /** Metadata: the u16 field's range. */
  META: 0xffff,
  /** A path inside the tree, in bytes (Linux PATH_MAX less the NUL). */
  PATH: 4095,
  /** One path component, in bytes (NAME_MAX). */
  NAME: 255,
  /** An extended attribute name, in bytes (XATTR_NAME_MAX). */
  XATTR_NAME: 255,
  /** An extended attribute value, in bytes (XATTR_SIZE_MAX). */
  XATTR_VALUE: 65536,
} as const;

export const PROTOCOL_VERSION = 2;
/** The stream header's magic, in its metadata. */
export const MAGIC = 'tfs-journal';

/** Frame types. Values below 0x10 are stream control; the rest are filesystem operations. */
export const FrameType = {
  STREAM_HEADER: 0x01,
  END: 0x02,
  HELLO: 0x03,
  ERROR: 0x04,
  REQUEST: 0x05,
  SNAPSHOT_BEGIN: 0x06,
  SNAPSHOT_END: 0x07,
  CREATE: 0x10,
  MKNOD: 0x11,
  MKDIR: 0x12,
  SYMLINK: 0x13,
  LINK: 0x14,
  UNLINK: 0x15,
  RMDIR: 0x16,
  RENAME: 0x17,
  PURGE: 0x18,
  OPEN: 0x20,
  WRITE: 0x21,
  TRUNCATE: 0x22,
  FTRUNCATE: 0x23,
  FSYNC: 0x24,
  RELEASE: 0x25,
  FALLOCATE: 0x26,
  CHMOD: 0x30,
  CHOWN: 0x31,
  UTIMENS: 0x32,
  SETXATTR: 0x33,
  REMOVEXATTR: 0x34,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const typeNames = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));

/** The name of a frame type, or undefined for an unknown value. */
export function frameTypeName(type: number): string | undefined {
  return typeNames.get(type);
}

/** One decoded frame. `meta`, `data` and `bytes` are views: copy them to keep them past the next chunk. */
export interface Frame {
  type: number;
  flags: number;
  seq: bigint;
  /** msgpack-encoded metadata. */
  meta: Uint8Array;
  /** Raw data (write contents, xattr values). */
  data: Uint8Array;
  /** The whole frame as it was on the wire, for blind forwarding. */
  bytes: Uint8Array;
}

/** Rounds n up to the next multiple of 16. */
export function align(n: number): number {
  return (n + ALIGN - 1) & ~(ALIGN - 1);
}

/** Total frame length for the given metadata and data sizes. */
export function frameLength(metaLength: number, dataLength: number): number {
  return align(HEADER_SIZE + metaLength + dataLength);
}
