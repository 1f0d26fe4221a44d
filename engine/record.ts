// The one check that a parsed JSON or YAML value is an object with keys (not null, not an array),
// used wherever configuration, policy data, token claims or request bodies are read.

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
