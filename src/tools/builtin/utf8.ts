/** UTF-8 at a byte cut: fs.read and the bridges cut text only before a whole character. */

/** The length of `bytes[0, length)` without a trailing incomplete UTF-8 sequence. */
export function completeUtf8Length(bytes: Uint8Array, length = bytes.length): number {
  // A sequence is at most 4 bytes: look back at most 3 for its lead byte.
  for (let i = length - 1; i >= Math.max(0, length - 3); i--) {
    const byte = bytes[i] ?? 0;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return i + needed <= length ? length : i;
  }
  return length;
}
