// Password literals never reach the audit log, recordings or logs: `CREATE/ALTER ROLE … PASSWORD
// '…'`, `SET …password… = '…'` and the like have the literal replaced. When a statement mentions a
// password at all, its bound parameters are redacted too (`ALTER ROLE x PASSWORD $1`).
// The SQL-aware classifier refines this; this form is deliberately broad: over-redaction costs a
// little audit detail, under-redaction leaks a credential.

const PASSWORD_LITERAL_RE =
  /(\bpassword\w*["']?)(\s+|\s*=\s*|\s+to\s+)((?:[eEuU]&?)?'(?:[^'\\]|''|\\.)*'|\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\4\$)/gi

const MENTIONS_PASSWORD_RE = /password/i

export function mentionsPassword(sql: string): boolean {
  return MENTIONS_PASSWORD_RE.test(sql)
}

export function redactSql(sql: string): string {
  if (!MENTIONS_PASSWORD_RE.test(sql)) return sql
  return sql.replace(PASSWORD_LITERAL_RE, (_m, kw: string, sep: string) => `${kw}${sep}'[redacted]'`)
}
