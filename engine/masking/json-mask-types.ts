// The JSON masker's contract: what to mask (a path and its obligation), the options, what it
// reports for audit, and JsonMaskError for input it refuses.

import type { MaskObligation } from '../types.js'

/** Invalid JSON, or a document the masker will not handle (too deep): the stream must be cut. */
export class JsonMaskError extends Error {
  override readonly name = 'JsonMaskError'
  constructor(
    message: string,
    /** Offset in the input where the problem was found. */
    readonly offset: number,
  ) {
    super(message)
  }
}

/** What to mask: a path and the obligation behind it (`MaskObligation` with `json_path`). */
export interface JsonMaskTarget {
  readonly path: string
  readonly rule: string
  readonly strategy: MaskObligation['strategy']
  readonly keep?: number
}

/** One path that masked something, for audit: how many values it replaced. */
export interface JsonMaskedPath {
  readonly path: string
  readonly rule: string
  readonly strategy: MaskObligation['strategy']
  readonly count: number
}

export interface JsonMaskOptions {
  /** Several top-level values (NDJSON, JSON sequences, concatenated JSON); each starts at `$`. */
  readonly multiple?: boolean
  /** Containers nested deeper than this are refused (default 512). */
  readonly maxDepth?: number
  /** A masked string or number longer than this is redacted rather than kept for partial/hash (default 64 KiB). */
  readonly maxCapture?: number
}
