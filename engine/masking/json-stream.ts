// Masks values at JSONPath locations in a JSON document while it streams, in bounded memory.
//
// A hand-written, resumable scanner (any byte may be the last of a chunk): it validates the whole
// document against RFC 8259 (and UTF-8), tracks where each value sits with a lazily built
// automaton over the rules' paths, and copies the input through as slices of the chunks it was
// given, except for masked values, which are replaced as a whole. Whether a value is masked is
// known at its first byte (its path is complete by then), so nothing is ever held back to decide,
// and a masked value's bytes are never emitted: they are dropped while scanned and replaced when
// the value ends.
//
// Invalid input throws JsonMaskError at the first byte that makes it invalid; everything emitted
// before is a valid JSON prefix, masked. The caller must then cut the stream (never fall back to
// passing the rest through): a lenient client could read past a point where this scanner stopped
// understanding the document.
//
// Memory: the container stack (at most `maxDepth`), a member name being compared (at most a few
// times the longest name in a path), a masked string or number kept for `partial`/`hash` (at most
// `maxCapture` bytes, else it is redacted), up to 3 bytes of an unfinished UTF-8 sequence.
//
// Values, per strategy (the SQL rules' strategies; "NULL stays NULL"):
//   string        redact "****", partial "****"+last keep characters, hash/hash_session 32 hex
//                 digits (of the decoded value's UTF-8, so SQL and HTTP hashes of a value match)
//   number        the same, on its text, as a string ("****6789")
//   true/false    "****" (a hash or a partial of two possible values reveals them)
//   object/array  "****" (nothing of a whole structure can be partial or hashed)
//   null          null
//   strategy null → null for every value.
//
// The parts: json-mask-types.ts is the contract's types, json-plan.ts compiles the paths,
// json-masker.ts is the scanner; this module is the entry point (with the whole-document and
// Transform stream wrappers).

import { Transform, type TransformCallback } from 'node:stream'
import type { JsonMaskedPath, JsonMaskOptions } from './json-mask-types.js'
import { JsonMasker } from './json-masker.js'
import type { JsonMaskPlan } from './json-plan.js'
import type { MaskingKeys } from './values.js'

export { JsonMaskError, type JsonMaskedPath, type JsonMaskOptions, type JsonMaskTarget } from './json-mask-types.js'
export { JsonMasker } from './json-masker.js'
export { JsonMaskPlan, jsonMaskPlan } from './json-plan.js'

/** Masks a whole document in memory (small bodies: an event, a message, a tool result). */
export function maskJson(
  plan: JsonMaskPlan,
  keys: Buffer | MaskingKeys,
  doc: Buffer,
  opts: JsonMaskOptions = {},
): { body: Buffer; masked: JsonMaskedPath[] } {
  const m = new JsonMasker(plan, keys, opts)
  const parts = [...m.write(doc), ...m.end()]
  return { body: parts.length === 1 && parts[0] === doc ? doc : Buffer.concat(parts), masked: m.masked() }
}

/** A Transform stream around a JsonMasker: invalid JSON destroys it with the JsonMaskError. */
export function jsonMaskStream(masker: JsonMasker): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      let parts: Buffer[]
      try {
        parts = masker.write(chunk)
      } catch (err) {
        cb(err as Error)
        return
      }
      // One buffer per chunk: each push would otherwise be a write of its own downstream.
      if (parts.length > 0) this.push(parts.length === 1 ? parts[0] : Buffer.concat(parts))
      cb()
    },
    flush(cb: TransformCallback): void {
      let parts: Buffer[]
      try {
        parts = masker.end()
      } catch (err) {
        cb(err as Error)
        return
      }
      if (parts.length > 0) this.push(Buffer.concat(parts))
      cb()
    },
  })
}
