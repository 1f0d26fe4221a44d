// Building blocks of the configuration schema (engine/config/config.ts composes them with the sections'
// own schemas into the one schema of gatehouse.yaml). Each carries the message an operator reads,
// so a problem is reported as "key.path: what is wrong" exactly as before the schema existed; a
// value that may be a secret is never echoed in a message.

import { z } from 'zod'
import { parseDuration } from '../duration.js'

/** `env:NAME` or `file:PATH`: how a secret is named in configuration (never the secret itself). */
export const SECRET_REF_RE = /^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$/
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/
export const ADDRESS_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

/** A mapping with exactly these keys; any other key is reported by name with the allowed ones. */
export function strict<T extends z.ZodRawShape>(shape: T, what = 'must be a mapping') {
  const allowed = Object.keys(shape).join(', ')
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === 'unrecognized_keys' ? `unknown key (allowed: ${allowed})` : iss.input === undefined ? 'is required' : what,
  })
}

/** A non-empty string, optional unless `required` says what to do instead. */
export function text(required?: string) {
  return z
    .string({
      error: (iss) =>
        iss.input === undefined ? (required ?? 'is required') : `must be a non-empty string (got ${JSON.stringify(iss.input)})`,
    })
    .min(1, { error: (iss) => `must be a non-empty string (got ${JSON.stringify(iss.input)})` })
}

export function bool() {
  return z.boolean({ error: 'must be true or false' })
}

export function int(min: number, max: number, message = `must be an integer between ${min} and ${max}`) {
  return z.number({ error: message }).int({ error: message }).min(min, { error: message }).max(max, { error: message })
}

/** A duration like 15m; `zero` allows 0 (never by default). */
export function duration(message = 'must be a duration like 30s, 15m, 1h or 7d') {
  return z.string({ error: (iss) => `${message} (got ${JSON.stringify(iss.input)})` }).refine(
    (v) => {
      const s = parseDuration(v)
      return s !== null && s > 0
    },
    { error: (iss) => `${message} (got ${JSON.stringify(iss.input)})` },
  )
}

/** A secret reference; the value itself is never repeated (it may be the secret). */
export function secretRef(message: string) {
  return z.string({ error: message }).regex(SECRET_REF_RE, { error: message })
}

export function address(message: string) {
  return z
    .string({ error: (iss) => `${message} (got ${JSON.stringify(iss.input)})` })
    .refine((v) => ADDRESS_RE.test(v.trim()) && Number(ADDRESS_RE.exec(v.trim())?.[2]) <= 65535, {
      error: (iss) => `${message} (got ${JSON.stringify(iss.input)})`,
    })
}

export function list<T extends z.ZodType>(item: T, message = 'must be a list') {
  return z.array(item, { error: message })
}

/** "path: what is wrong" lines for every issue, in the configuration's own key notation. */
export function issueLines(
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[] = [],
): { path: (string | number)[]; line: string }[] {
  const out: { path: (string | number)[]; line: string }[] = []
  const seen = new Set<string>()
  const push = (path: (string | number)[], message: string): void => {
    const line = `${formatPath(path)}: ${message}`
    if (seen.has(line)) return
    seen.add(line)
    out.push({ path, line })
  }
  for (const iss of issues) {
    const path = [...prefix, ...iss.path].map((k) => (typeof k === 'symbol' ? String(k) : k)) as (string | number)[]
    if (iss.code === 'unrecognized_keys') for (const k of iss.keys) push([...path, k], iss.message)
    else if (iss.code === 'invalid_union' && iss.errors.length > 0) {
      // A union (a plugin given as a path or as a mapping): the branch the value got furthest
      // into speaks; when none got past the value itself, the union's own message does.
      const depth = (b: readonly z.core.$ZodIssue[]): number => Math.max(0, ...b.map((i) => i.path.length))
      const branch = iss.errors.reduce((a, b) => (depth(b) > depth(a) ? b : a))
      if (depth(branch) === 0) push(path, iss.message)
      else for (const l of issueLines(branch, path)) push(l.path, l.line.slice(l.line.indexOf(': ') + 2))
    } else push(path, iss.message)
  }
  return out
}

export function formatPath(path: readonly (string | number)[]): string {
  let s = ''
  for (const k of path) s += typeof k === 'number' ? `[${k}]` : s === '' ? k : `.${k}`
  return s || '(top level)'
}

/**
 * A list whose entries' `key` must be unique, reported at the second one. Checked even when other
 * entries have problems, so every mistake is reported in one pass.
 */
export function uniqueNames<T extends z.ZodType>(schema: z.ZodArray<T>, what: string, key = 'name') {
  return schema.superRefine(
    (items: unknown[], ctx) => {
      if (!Array.isArray(items)) return
      const seen = new Set<unknown>()
      items.forEach((item, i) => {
        const v = typeof item === 'object' && item !== null ? (item as Record<string, unknown>)[key] : undefined
        if (typeof v !== 'string') return
        if (seen.has(v)) ctx.addIssue({ code: 'custom', path: [i, key], message: `duplicate ${what} ${JSON.stringify(v)}` })
        seen.add(v)
      })
    },
    { when: () => true },
  )
}

/** A retention: a duration, or `forever` / null to keep everything. */
export function retention(message = 'must be a duration like 30d or 12h, or "forever"') {
  const msg = (input: unknown): string => `${message} (got ${JSON.stringify(input)})`
  return z
    .string({ error: (iss) => msg(iss.input) })
    .nullable()
    .refine((v) => v === null || v === 'forever' || (parseDuration(v) ?? 0) > 0, { error: (iss) => msg(iss.input) })
}
