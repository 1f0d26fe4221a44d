// Kubernetes' protobuf encoding, read as far as policy needs it and no further: the envelope
// (`k8s\0`, then a runtime.Unknown: TypeMeta, the object's raw bytes, content encoding and type)
// and, in the object, the fields a decision reads by their field numbers (ObjectMeta, a pod
// spec's Secret references). kubectl sends built-in objects this way. Everything is refused that
// the API server could read differently from this reader: truncated or malformed messages, wire
// types other than varint, 64-bit, length-delimited and 32-bit, overlong varints, a singular field
// given twice (Go would merge or take the last), duplicate map keys, invalid UTF-8, and anything
// after the envelope. The bytes read are the bytes forwarded; nothing is re-encoded.

import protobuf from 'protobufjs/minimal.js'

/** A protobuf body the gateway refuses to judge (a 400 with this message). */
export class KubeProtobufError extends Error {}

export const KUBE_PROTOBUF_TYPE = 'application/vnd.kubernetes.protobuf'
const MAGIC = [0x6b, 0x38, 0x73, 0x00]

const WIRE_VARINT = 0
const WIRE_I64 = 1
const WIRE_LEN = 2
const WIRE_I32 = 5

export interface PbField {
  readonly no: number
  readonly wire: number
  /** The field's bytes for length-delimited fields; empty for the others. */
  readonly bytes: Uint8Array
}

/** A 32-bit varint (tag or length), refused when longer than 5 bytes or above 2^32 - 1. */
function varint32(r: protobuf.Reader): number {
  const start = r.pos
  const v = r.uint32()
  const n = r.pos - start
  if (n > 5 || (n === 5 && ((r.buf[r.pos - 1] as number) & 0xf0) !== 0)) throw new KubeProtobufError('a protobuf varint is too long')
  return v >>> 0
}

/** Every field of one message, in order; throws on anything malformed or left over. */
export function pbFields(buf: Uint8Array): PbField[] {
  const r = protobuf.Reader.create(buf)
  const out: PbField[] = []
  try {
    while (r.pos < r.len) {
      const tag = varint32(r)
      const no = tag >>> 3
      const wire = tag & 7
      if (no === 0) throw new KubeProtobufError('a protobuf field has number 0')
      switch (wire) {
        case WIRE_VARINT: {
          const start = r.pos
          r.skipType(WIRE_VARINT)
          if (r.pos - start > 10) throw new KubeProtobufError('a protobuf varint is too long')
          out.push({ no, wire, bytes: new Uint8Array(0) })
          break
        }
        case WIRE_I64:
        case WIRE_I32:
          r.skip(wire === WIRE_I64 ? 8 : 4)
          out.push({ no, wire, bytes: new Uint8Array(0) })
          break
        case WIRE_LEN: {
          const len = varint32(r)
          if (len > r.len - r.pos) throw new KubeProtobufError('a protobuf field is truncated')
          out.push({ no, wire, bytes: r.buf.subarray(r.pos, r.pos + len) })
          r.pos += len
          break
        }
        default:
          throw new KubeProtobufError(`protobuf wire type ${wire} is not accepted`)
      }
    }
  } catch (err) {
    if (err instanceof KubeProtobufError) throw err
    // protobufjs throws RangeError ("index out of range") past the end of the buffer.
    throw new KubeProtobufError('a protobuf message is truncated')
  }
  if (r.pos !== r.len) throw new KubeProtobufError('a protobuf message is truncated')
  return out
}

/** The one length-delimited field `no` of a message, or undefined; refused when repeated or of another wire type. */
export function pbOne(fields: readonly PbField[], no: number): Uint8Array | undefined {
  let found: Uint8Array | undefined
  for (const f of fields) {
    if (f.no !== no) continue
    if (f.wire !== WIRE_LEN) throw new KubeProtobufError(`protobuf field ${no} has the wrong wire type`)
    if (found !== undefined) throw new KubeProtobufError(`protobuf field ${no} is given twice`)
    found = f.bytes
  }
  return found
}

/** Every occurrence of the repeated length-delimited field `no`. */
export function pbAll(fields: readonly PbField[], no: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (const f of fields) {
    if (f.no !== no) continue
    if (f.wire !== WIRE_LEN) throw new KubeProtobufError(`protobuf field ${no} has the wrong wire type`)
    out.push(f.bytes)
  }
  return out
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export function pbString(bytes: Uint8Array): string {
  try {
    return UTF8.decode(bytes)
  } catch {
    throw new KubeProtobufError('a protobuf string is not valid UTF-8')
  }
}

/** A `map<string, string>` field: its entries (key 1, value 2); a key given twice is refused. */
export function pbStringMap(fields: readonly PbField[], no: number): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>
  for (const entry of pbAll(fields, no)) {
    const e = pbFields(entry)
    for (const f of e) if (f.no !== 1 && f.no !== 2) throw new KubeProtobufError('a protobuf map entry has an unknown field')
    const k = pbOne(e, 1)
    const v = pbOne(e, 2)
    const key = k === undefined ? '' : pbString(k)
    if (Object.hasOwn(out, key)) throw new KubeProtobufError(`a protobuf map has key ${JSON.stringify(key)} twice`)
    out[key] = v === undefined ? '' : pbString(v)
  }
  return { ...out }
}

export interface KubeEnvelope {
  readonly apiVersion: string
  readonly kind: string
  /** The object's own message. */
  readonly raw: Uint8Array
}

export function isKubeProtobuf(body: Uint8Array): boolean {
  return body.length >= 4 && MAGIC.every((b, i) => body[i] === b)
}

/** The envelope of a protobuf body: `k8s\0` and one runtime.Unknown, nothing else. */
export function decodeEnvelope(body: Uint8Array): KubeEnvelope {
  if (!isKubeProtobuf(body)) throw new KubeProtobufError('a protobuf body must start with the Kubernetes magic number')
  const fields = pbFields(body.subarray(4))
  for (const f of fields) {
    if (f.no < 1 || f.no > 4) throw new KubeProtobufError(`the protobuf envelope has an unknown field ${f.no}`)
  }
  const typeMeta = pbOne(fields, 1)
  const raw = pbOne(fields, 2)
  for (const no of [3, 4]) {
    const v = pbOne(fields, no)
    if (v !== undefined && v.length > 0)
      throw new KubeProtobufError('a protobuf body with a content encoding or type of its own is refused')
  }
  if (typeMeta === undefined || raw === undefined) throw new KubeProtobufError('the protobuf envelope has no type or no object')
  const tm = pbFields(typeMeta)
  for (const f of tm) if (f.no !== 1 && f.no !== 2) throw new KubeProtobufError('the protobuf type has an unknown field')
  const apiVersion = pbOne(tm, 1)
  const kind = pbOne(tm, 2)
  const out = { apiVersion: apiVersion ? pbString(apiVersion) : '', kind: kind ? pbString(kind) : '', raw }
  if (out.apiVersion === '' || out.kind === '') throw new KubeProtobufError('the protobuf envelope does not name its apiVersion and kind')
  return out
}

export interface PbObjectMeta {
  readonly name?: string
  readonly generateName?: string
  readonly namespace?: string
  readonly labels?: Record<string, string>
  readonly annotations?: Record<string, string>
}

/** The ObjectMeta (field 1 of every top-level object) fields policy reads. */
export function decodeObjectMeta(raw: Uint8Array): PbObjectMeta {
  const meta = pbOne(pbFields(raw), 1)
  if (meta === undefined) return {}
  const f = pbFields(meta)
  const str = (no: number): string | undefined => {
    const b = pbOne(f, no)
    return b === undefined ? undefined : pbString(b)
  }
  const out: Record<string, unknown> = {}
  const name = str(1)
  const generateName = str(2)
  const namespace = str(3)
  if (name !== undefined) out.name = name
  if (generateName !== undefined) out.generateName = generateName
  if (namespace !== undefined) out.namespace = namespace
  // Go decodes an empty map and an absent one alike (absent).
  const labels = pbStringMap(f, 11)
  const annotations = pbStringMap(f, 12)
  if (Object.keys(labels).length > 0) out.labels = labels
  if (Object.keys(annotations).length > 0) out.annotations = annotations
  return out as PbObjectMeta
}
