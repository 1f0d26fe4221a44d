// Kubernetes protobuf bodies by hand, for the Kubernetes proxy tests: messages of length-delimited
// fields (protobufjs's Writer) and the `k8s\0` envelope kubectl sends, with ObjectMeta written as
// Go writes it (empty strings included).

import protobuf from 'protobufjs/minimal.js'

export type F = readonly [no: number, value: string | Uint8Array]

/** A message of length-delimited fields, in order. */
export function enc(...fields: F[]): Uint8Array {
  const w = protobuf.Writer.create()
  for (const [no, v] of fields) {
    w.uint32((no << 3) | 2)
    if (typeof v === 'string') w.string(v)
    else w.bytes(v)
  }
  return w.finish()
}

export const cat = (...parts: Uint8Array[]): Buffer => Buffer.concat(parts)
export const MAGIC = Buffer.from('k8s\0', 'latin1')

/** `k8s\0` and a runtime.Unknown (TypeMeta, raw, empty content encoding and type), plus `extra` fields. */
export const envelope = (apiVersion: string, kind: string, raw: Uint8Array, extra: F[] = []): Buffer =>
  cat(MAGIC, enc([1, enc([1, apiVersion], [2, kind])], [2, raw], [3, ''], [4, ''], ...extra))

export const entry = (k: string, v: string): Uint8Array => enc([1, k], [2, v])

export const meta = (name: string, ns: string, labels: Record<string, string> = {}, annotations: Record<string, string> = {}): Uint8Array =>
  enc(
    [1, name],
    [2, ''],
    [3, ns],
    ...Object.entries(labels).map(([k, v]): F => [11, entry(k, v)]),
    ...Object.entries(annotations).map(([k, v]): F => [12, entry(k, v)]),
  )

/** A LocalObjectReference. */
export const lor = (name: string): Uint8Array => enc([1, name])
