// What the gateway makes of a connector's attach answer before it trusts any of it: the
// self-description it shows operators, and the kind of a refusal the audit records.

/** `text` cut to `max` characters, every character outside printable ASCII replaced by '?'. */
export function printable(text: string, max: number): string {
  return text.slice(0, max).replace(/[^\x20-\x7e]/g, '?')
}

/** Why a connector was refused, as `connector.refused` records it (`kind`). */
export type RefusalKind = 'forged' | 'expired' | 'revoked' | 'used' | 'not_a_connector' | 'unconfigured' | 'join_disabled'

/** The kind of a credential's refusal, from the identity layer's (or the join store's) detail. */
export function refusalKind(detail: string): RefusalKind {
  if (/already used/.test(detail)) return 'used'
  if (/expired/.test(detail)) return 'expired'
  if (/revoked|replaced/.test(detail)) return 'revoked'
  return 'forged'
}
