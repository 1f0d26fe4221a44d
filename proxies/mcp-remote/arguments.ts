// A request's arguments as they are bound and audited: canonical JSON (a once-grant is bound to
// the arguments, not to their spelling) and the arguments kept in audit events, up to a size.

/** Audit events keep arguments up to this size (serialised); larger ones are summarised. */
const AUDIT_ARGUMENTS_BYTES = 4096

/** Canonical JSON (sorted keys): a once-grant is bound to the arguments, not to their spelling. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v) ?? 'null'
}

export function auditArguments(args: unknown): Record<string, unknown> {
  const text = JSON.stringify(args ?? {})
  return Buffer.byteLength(text) <= AUDIT_ARGUMENTS_BYTES ? { arguments: args ?? {} } : { arguments_bytes: Buffer.byteLength(text) }
}
