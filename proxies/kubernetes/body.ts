// What a write's body tells policy: the object's kind, apiVersion, name, generateName, namespace,
// labels and annotations (`object`) and the Secrets it hands to a container (`secret_refs`). The
// same facts come from a JSON or YAML body and from kubectl's protobuf body of the same object:
// for the built-in kinds that carry a pod template, the Secret references are read by the pod
// spec's schema (volumes, projected volumes, env `secretKeyRef`, `envFrom`, in every kind of
// container) in either encoding. A patch, or a JSON object of a kind the gateway has no schema for
// (custom resources), is scanned for any `secretName`, `secretRef`, `secretKeyRef` or
// `secret.name` at any depth instead: the broader reading.

import yaml from 'js-yaml'
import { decodeEnvelope, decodeObjectMeta, isKubeProtobuf, KUBE_PROTOBUF_TYPE, pbAll, pbFields, pbOne, pbString } from './protobuf.js'

/** The annotation where `kubectl apply` keeps the whole object (a Secret's data included): never in a decision input. */
export const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration'

export interface WriteFacts {
  /** `kind`, `api_version`, `name`, `generate_name`, `namespace`, `labels`, `annotations`, where the body has them. */
  readonly object: Record<string, unknown> | null
  readonly secret_refs: string[]
  readonly format: 'json' | 'yaml' | 'protobuf'
}

/** Why a body cannot be judged: unreadable (`opaque`) or refused outright (`invalid`, with a reason). */
export type BodyReading = { ok: true; facts: WriteFacts } | { ok: false; opaque: true } | { ok: false; opaque: false; reason: string }

/**
 * One step from a message to a field: the JSON member (null where Go inlines a struct in JSON
 * but protobuf wraps it in a field), the protobuf field number, and whether it is a list.
 */
type Step = readonly [json: string | null, pb: number, list: boolean]
type Path = readonly Step[]

const ref = (json: string, pb: number): Step => [json, pb, false]
const list = (json: string, pb: number): Step => [json, pb, true]
const inline = (pb: number): Step => [null, pb, false]
/** `name` of a LocalObjectReference. */
const NAME: Step = ref('name', 1)

/** From a Volume: every place a volume source names a Secret. */
const VOLUME_SECRETS: Path[] = [
  [inline(2), ref('secret', 6), ref('secretName', 1)],
  [inline(2), ref('projected', 26), list('sources', 1), ref('secret', 1), inline(1), NAME],
  [inline(2), ref('azureFile', 18), ref('secretName', 1)],
  [inline(2), ref('cephfs', 14), ref('secretRef', 5), NAME],
  [inline(2), ref('cinder', 13), ref('secretRef', 4), NAME],
  [inline(2), ref('flexVolume', 12), ref('secretRef', 3), NAME],
  [inline(2), ref('iscsi', 8), ref('secretRef', 10), NAME],
  [inline(2), ref('rbd', 11), ref('secretRef', 7), NAME],
  [inline(2), ref('scaleIO', 25), ref('secretRef', 3), NAME],
  [inline(2), ref('storageos', 27), ref('secretRef', 5), NAME],
  [inline(2), ref('csi', 28), ref('nodePublishSecretRef', 5), NAME],
]

/** From a Container: the environment taken from Secrets. */
const CONTAINER_SECRETS: Path[] = [
  [list('env', 7), ref('valueFrom', 3), ref('secretKeyRef', 4), inline(1), NAME],
  [list('envFrom', 19), ref('secretRef', 3), inline(1), NAME],
]

/** From a PodSpec. */
const POD_SPEC_SECRETS: Path[] = [
  ...VOLUME_SECRETS.map((p) => [list('volumes', 1), ...p]),
  ...CONTAINER_SECRETS.map((p) => [list('initContainers', 20), ...p]),
  ...CONTAINER_SECRETS.map((p) => [list('containers', 2), ...p]),
  // An EphemeralContainer inlines its EphemeralContainerCommon in JSON; protobuf wraps it in field 1.
  ...CONTAINER_SECRETS.map((p) => [list('ephemeralContainers', 34), inline(1), ...p]),
]

const TEMPLATE_SPEC: Path = [ref('template', 3), ref('spec', 2)]

/** From the top of each built-in object that carries a pod spec, keyed `group/kind`, to that spec. */
const POD_SPEC_AT: Readonly<Record<string, Path>> = {
  '/Pod': [ref('spec', 2)],
  '/PodTemplate': [ref('template', 2), ref('spec', 2)],
  '/ReplicationController': [ref('spec', 2), ...TEMPLATE_SPEC],
  'apps/Deployment': [ref('spec', 2), ...TEMPLATE_SPEC],
  'apps/ReplicaSet': [ref('spec', 2), ...TEMPLATE_SPEC],
  'apps/StatefulSet': [ref('spec', 2), ...TEMPLATE_SPEC],
  'apps/DaemonSet': [ref('spec', 2), ref('template', 2), ref('spec', 2)],
  'batch/Job': [ref('spec', 2), ref('template', 6), ref('spec', 2)],
  'batch/CronJob': [ref('spec', 2), ref('jobTemplate', 5), ref('spec', 2), ref('template', 6), ref('spec', 2)],
}

function groupOf(apiVersion: string): string {
  const i = apiVersion.lastIndexOf('/')
  return i < 0 ? '' : apiVersion.slice(0, i)
}

/** Groups served by the API server itself: a custom resource's group has a dot and is not `*.k8s.io`. */
function builtinGroup(group: string): boolean {
  return group === '' || !group.includes('.') || group.endsWith('.k8s.io')
}

function collectJson(node: unknown, path: Path, out: Set<string>): void {
  if (path.length === 0) {
    if (typeof node === 'string') out.add(node)
    return
  }
  const [json, , isList] = path[0] as Step
  const rest = path.slice(1)
  if (json === null) {
    collectJson(node, rest, out)
    return
  }
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return
  const v = (node as Record<string, unknown>)[json]
  if (isList) {
    if (Array.isArray(v)) for (const x of v) collectJson(x, rest, out)
  } else collectJson(v, rest, out)
}

function collectPb(msg: Uint8Array, path: Path, out: Set<string>): void {
  const [, pb, isList] = path[0] as Step
  const rest = path.slice(1)
  const fields = pbFields(msg)
  const found = isList ? pbAll(fields, pb) : [pbOne(fields, pb)].filter((x): x is Uint8Array => x !== undefined)
  for (const bytes of found) {
    if (rest.length === 0) out.add(pbString(bytes))
    else collectPb(bytes, rest, out)
  }
}

/** The Secrets a pod spec at `prefix` names, in a JSON object. */
function podSecretsJson(obj: unknown, prefix: Path): string[] {
  const out = new Set<string>()
  for (const p of POD_SPEC_SECRETS) collectJson(obj, [...prefix, ...p], out)
  return [...out].sort()
}

/** The same in a protobuf object. */
function podSecretsPb(raw: Uint8Array, prefix: Path): string[] {
  const out = new Set<string>()
  for (const p of POD_SPEC_SECRETS) collectPb(raw, [...prefix, ...p], out)
  return [...out].sort()
}

/**
 * The broader reading, for patches and objects of unknown schema: the Secrets named by volumes
 * (`secretName`), projected sources (`secret.name`) and environment (`secretKeyRef.name`,
 * `secretRef.name`) at any depth.
 */
export function scanSecretRefs(v: unknown, out: Set<string> = new Set()): string[] {
  if (Array.isArray(v)) for (const x of v) scanSecretRefs(x, out)
  else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (k === 'secretName' && typeof x === 'string') out.add(x)
      else if (
        (k === 'secretKeyRef' || k === 'secretRef' || k === 'nodePublishSecretRef' || k === 'secret') &&
        typeof x === 'object' &&
        x !== null
      ) {
        const name = (x as Record<string, unknown>).name
        if (typeof name === 'string') out.add(name)
      }
      scanSecretRefs(x, out)
    }
  }
  return [...out].sort()
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined
  const out: Record<string, string> = {}
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) if (typeof x === 'string') out[k] = x
  return Object.keys(out).length > 0 ? out : undefined
}

interface Meta {
  readonly kind?: unknown
  readonly apiVersion?: unknown
  readonly name?: unknown
  readonly generateName?: unknown
  readonly namespace?: unknown
  readonly labels?: unknown
  readonly annotations?: unknown
}

/** The `object` policy reads: the same members whatever the encoding; the last-applied copy left out. */
function summary(m: Meta): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of [
    ['kind', m.kind],
    ['api_version', m.apiVersion],
    ['name', m.name],
    ['generate_name', m.generateName],
    ['namespace', m.namespace],
  ] as const) {
    // Go writes empty strings into protobuf where JSON leaves them out: empty is absent in both.
    if (typeof v === 'string' && v !== '') out[k] = v
  }
  const labels = stringMap(m.labels)
  const annotations = stringMap(m.annotations)
  if (labels) out.labels = labels
  if (annotations) {
    delete annotations[LAST_APPLIED]
    if (Object.keys(annotations).length > 0) out.annotations = annotations
  }
  return out
}

function hasMergeKey(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasMergeKey)
  if (typeof v !== 'object' || v === null) return false
  return Object.entries(v as Record<string, unknown>).some(([k, x]) => k === '<<' || hasMergeKey(x))
}

/** Members whose value names a Secret, or holds a `name` that does. */
const SECRET_KEYS = new Set(['secretName', 'secretKeyRef', 'secretRef', 'nodePublishSecretRef', 'secret'])

/** What `secret_refs` says of a name a patch copies or moves into place: unknown to the gateway. */
export const COPIED_SECRET_REF = '(a name the patch copies or moves in)'

/** Where a Secret's data is, and the annotation that copies it: no patch may copy, move or test it. */
const SECRET_DATA_POINTERS = [
  /^\/data(\/|$)/,
  /^\/stringData(\/|$)/,
  /^\/metadata\/annotations\/kubectl\.kubernetes\.io~1last-applied-configuration$/,
]

/**
 * The Secrets a JSON patch (RFC 6902) names: in the values it adds (at any depth, read together
 * with the member the operation's path ends in, so `…/secretKeyRef` ← `{name: db}` counts), and in
 * the path itself (`…/secret/secretName` ← `"db"`). A copy or move into such a path brings a name
 * the gateway cannot see: it counts as an unknown Secret. Copying, moving or testing a Secret's data
 * is refused: the copy would carry the value where masking does not look, and a test answers
 * whether a guess is right.
 */
function jsonPatchRefs(ops: readonly unknown[]): { ok: true; refs: string[] } | { ok: false; reason: string } {
  const out = new Set<string>()
  for (const op of ops) {
    if (typeof op !== 'object' || op === null || Array.isArray(op)) {
      scanSecretRefs(op, out)
      continue
    }
    const o = op as Record<string, unknown>
    const kind = typeof o.op === 'string' ? o.op : ''
    const path = typeof o.path === 'string' ? o.path : ''
    const from = typeof o.from === 'string' ? o.from : ''
    if (
      ((kind === 'copy' || kind === 'move') && SECRET_DATA_POINTERS.some((r) => r.test(from))) ||
      (kind === 'test' && SECRET_DATA_POINTERS.some((r) => r.test(path)))
    )
      return {
        ok: false,
        reason: `a JSON patch may not ${kind} a Secret's data (${kind === 'test' ? path : from}): the value would leave the place masking covers`,
      }
    const segs = path.split('/').map((x) => x.replaceAll('~1', '/').replaceAll('~0', '~'))
    const last = segs[segs.length - 1] ?? ''
    if (segs.some((x) => SECRET_KEYS.has(x))) {
      if (kind === 'copy' || kind === 'move') out.add(COPIED_SECRET_REF)
      else if (typeof o.value === 'string' && (last === 'secretName' || (last === 'name' && SECRET_KEYS.has(segs[segs.length - 2] ?? ''))))
        out.add(o.value)
    }
    if ('value' in o) scanSecretRefs({ [last]: o.value }, out)
    scanSecretRefs(o, out)
  }
  return { ok: true, refs: [...out].sort() }
}

/** The media type without parameters, lower case. */
export function mediaType(contentType: string): string {
  return (contentType.split(';')[0] ?? '').trim().toLowerCase()
}

/**
 * Reads a request's body. `fullObject` is false for a patch: a fragment, always given the broader
 * scan; every other body (create, update, a delete's DeleteOptions) is a whole object.
 */
export function readWriteBody(body: Buffer, contentType: string, fullObject: boolean): BodyReading {
  const t = mediaType(contentType)
  if (t === KUBE_PROTOBUF_TYPE) {
    if (!fullObject) return { ok: false, opaque: false, reason: 'a patch is JSON or YAML, not protobuf' }
    let env: ReturnType<typeof decodeEnvelope>
    try {
      env = decodeEnvelope(body)
      const meta = decodeObjectMeta(env.raw)
      const prefix = POD_SPEC_AT[`${groupOf(env.apiVersion)}/${env.kind}`]
      return {
        ok: true,
        facts: {
          object: summary({ kind: env.kind, apiVersion: env.apiVersion, ...meta }),
          secret_refs: prefix ? podSecretsPb(env.raw, prefix) : [],
          format: 'protobuf',
        },
      }
    } catch (err) {
      return { ok: false, opaque: false, reason: `the protobuf body cannot be read: ${(err as Error).message}` }
    }
  }
  // A protobuf envelope under another content type would be read by nobody here: refuse it too.
  if (isKubeProtobuf(body)) return { ok: false, opaque: true }
  let parsed: unknown
  let format: 'json' | 'yaml'
  try {
    if (t === 'application/apply-patch+yaml' || t === 'application/yaml') {
      parsed = yaml.load(body.toString('utf8'), { schema: yaml.JSON_SCHEMA })
      format = 'yaml'
    } else if (t === 'application/json' || t.endsWith('+json')) {
      parsed = JSON.parse(body.toString('utf8'))
      format = 'json'
    } else return { ok: false, opaque: true }
  } catch {
    return { ok: false, opaque: true }
  }
  if (format === 'yaml' && hasMergeKey(parsed)) {
    // The API server's YAML reader applies `<<` merge keys; this one would read them as a plain
    // member and miss what they merge in (a Secret volume). Refused rather than modelled.
    return { ok: false, opaque: false, reason: 'YAML merge keys (<<) are not accepted: send the object with its members written out' }
  }
  if (Array.isArray(parsed)) {
    // A JSON patch (a list of operations): no object, the broader scan of its values and paths.
    const ops = jsonPatchRefs(parsed)
    if (!ops.ok) return { ok: false, opaque: false, reason: ops.reason }
    return { ok: true, facts: { object: null, secret_refs: ops.refs, format } }
  }
  if (typeof parsed !== 'object' || parsed === null) return { ok: true, facts: { object: null, secret_refs: [], format } }
  const o = parsed as Record<string, unknown>
  const meta = (typeof o.metadata === 'object' && o.metadata !== null ? o.metadata : {}) as Record<string, unknown>
  const kind = typeof o.kind === 'string' ? o.kind : ''
  const apiVersion = typeof o.apiVersion === 'string' ? o.apiVersion : ''
  const group = groupOf(apiVersion)
  let refs: string[]
  if (fullObject && kind !== '' && apiVersion !== '' && builtinGroup(group)) {
    const prefix = POD_SPEC_AT[`${group}/${kind}`]
    refs = prefix ? podSecretsJson(o, prefix) : []
  } else refs = scanSecretRefs(o)
  return { ok: true, facts: { object: summary({ ...meta, kind: o.kind, apiVersion: o.apiVersion }), secret_refs: refs, format } }
}
