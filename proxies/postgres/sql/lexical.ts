// Settings that change how the server reads SQL text. With standard_conforming_strings off, a
// backslash ends a literal early for the server but not for the gateway's parser, and one judged
// statement runs as several; a client encoding whose trailing bytes can be a backslash or a quote
// (SJIS, BIG5, GBK…) does the same; backslash_quote and escape_string_warning belong to the same
// lexer. The proxy pins them at startup and refuses every statement that could change them, in any
// spelling: SET/RESET (also LOCAL), SET NAMES, ALTER ROLE|DATABASE|SYSTEM … SET, a function's SET
// clause, set_config with that name or with a name that is not a constant. COPY … (ENCODING …) other
// than UTF-8 reads or writes data in another encoding than the one the gateway judges and masks.

import { arr, nodeType, type Obj, obj, str, stringList } from './lineage-ast.js'

export const LEXICAL_SETTINGS: ReadonlySet<string> = new Set([
  'standard_conforming_strings',
  'client_encoding',
  'backslash_quote',
  'escape_string_warning',
])

const UTF8_NAMES = new Set(['utf8', 'utf-8', 'unicode'])

/** Why a statement's tree could change how the server lexes SQL (null: it cannot). */
export function lexicalChange(node: unknown): string | null {
  let found: string | null = null
  const visit = (v: unknown): void => {
    if (found !== null) return
    if (Array.isArray(v)) {
      for (const x of v) visit(x)
      return
    }
    const o = obj(v)
    if (!o) return
    const t = nodeType(o)
    if (t) {
      found = check(t[0], t[1])
      if (found !== null) return
    }
    for (const k of Object.keys(o)) {
      // ALTER ROLE|DATABASE|SYSTEM … SET carry their SET as a bare struct, not a wrapped node.
      if (k === 'setstmt' && obj(o[k])) found = check('VariableSetStmt', obj(o[k]) as Obj)
      if (found !== null) return
      visit(o[k])
    }
  }
  visit(node)
  return found
}

function check(type: string, n: Obj): string | null {
  switch (type) {
    case 'VariableSetStmt': {
      const kind = str(n.kind) ?? ''
      if (kind === 'VAR_RESET_ALL' || kind === 'VAR_SET_MULTI') return null
      const name = (str(n.name) ?? '').toLowerCase()
      return LEXICAL_SETTINGS.has(name) ? `changing ${name} would make the server read SQL differently from the gateway` : null
    }
    case 'FuncCall': {
      const parts = stringList(n.funcname)
      if ((parts[parts.length - 1] ?? '').toLowerCase() !== 'set_config') return null
      const first = nodeType(arr(n.args)[0])
      const name = first?.[0] === 'A_Const' ? str(obj(first[1].sval)?.sval) : null
      if (name === null) return 'set_config with a setting name that is not a constant could change how the server reads SQL'
      const lower = name.toLowerCase()
      return LEXICAL_SETTINGS.has(lower) ? `changing ${lower} would make the server read SQL differently from the gateway` : null
    }
    case 'CopyStmt':
      for (const o of arr(n.options)) {
        const d = nodeType(o)
        if (d?.[0] !== 'DefElem' || str(d[1].defname) !== 'encoding') continue
        const arg = nodeType(d[1].arg)
        const value = arg?.[0] === 'String' ? str(arg[1].sval) : null
        if (value === null || !UTF8_NAMES.has(value.toLowerCase()))
          return 'COPY with an ENCODING other than UTF8 is not allowed through Gatehouse'
      }
      return null
    default:
      return null
  }
}

/**
 * Whether a text could be read differently under another standard_conforming_strings,
 * backslash_quote or client encoding: only a backslash or a byte outside ASCII can make two
 * lexers disagree (every client encoding PostgreSQL supports is ASCII-compatible below 0x80).
 */
export function lexicallySensitive(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x5c || c >= 0x80) return true
  }
  return false
}
