import { Packr, Unpackr } from 'msgpackr';

// Plain msgpack (no msgpackr records extension) so any msgpack reader can decode metadata;
// 64-bit integers (nanosecond times) come back as BigInt.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, int64AsType: 'bigint', mapsAsObjects: true });

/** Encodes metadata. The result is a view into a shared buffer: copy it before the next call. */
export function packMeta(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes metadata; throws on malformed msgpack. */
export function unpackMeta(bytes: Uint8Array): unknown {
  return unpackr.unpack(bytes);
}
