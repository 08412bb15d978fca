import { crc32 } from 'node:zlib';
import { HEADER_SIZE, Offset } from './frame';

/** CRC-32 of a frame's header (less the checksum field) and its metadata + data. */
export function frameChecksum(header: Uint8Array, meta: Uint8Array, data: Uint8Array): number {
  let c = crc32(header.subarray(0, Offset.CHECKSUM));
  if (meta.length > 0) c = crc32(meta, c);
  if (data.length > 0) c = crc32(data, c);
  return c >>> 0;
}

/** Checksum of a frame held in one contiguous buffer. */
export function contiguousChecksum(frame: Uint8Array, metaLength: number, dataLength: number): number {
  let c = crc32(frame.subarray(0, Offset.CHECKSUM));
  if (metaLength + dataLength > 0) c = crc32(frame.subarray(HEADER_SIZE, HEADER_SIZE + metaLength + dataLength), c);
  return c >>> 0;
}
