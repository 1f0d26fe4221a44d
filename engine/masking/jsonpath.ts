// JSONPath for masking rules (`json_paths:` in masking.yaml): the subset that can be decided while
// a document streams past, one member name or array index at a time, without looking ahead.
//
//   $                 the whole document
//   .name  ['name']   a member (bracket form for any name: ['a.b'], ["it's"])
//   ['a','b']         either member
//   [0]  [0,2]        array elements by index
//   .*  [*]           every member or element
//   ..name  ..*  ..[0]  the same at any depth below
//
// Refused with a clear message: filters (`[?(...)]`), script expressions, slices and negative
// indices (both need the array's length, known only at its end, after the values have gone by).
// Names compare exactly (JSONPath is case-sensitive, as JSON member names are).

export class JsonPathError extends Error {
  override readonly name = 'JsonPathError'
}

/** One step: which member names / indices it takes, and whether it may skip levels first (`..`). */
export interface JsonPathStep {
  /** `..`: this step may match at any depth below the previous one. */
  readonly descendant: boolean
  /** Every member and every element. */
  readonly any: boolean
  readonly names: readonly string[]
  readonly indices: readonly number[]
}

export interface JsonPath {
  readonly text: string
  readonly steps: readonly JsonPathStep[]
}

const MAX_PATH_CHARS = 1024
const MAX_STEPS = 64
const NAME_CHAR = /[^.[\]*'"\s()?@,:]/u

/** Parses one path; throws JsonPathError saying what is wrong and where. */
export function parseJsonPath(text: string): JsonPath {
  const fail = (at: number, why: string): never => {
    throw new JsonPathError(`JSONPath ${JSON.stringify(text)}: ${why} (at character ${at + 1})`)
  }
  if (typeof text !== 'string' || text.length === 0) throw new JsonPathError('JSONPath must be a non-empty string starting with $')
  if (text.length > MAX_PATH_CHARS) throw new JsonPathError(`JSONPath is longer than ${MAX_PATH_CHARS} characters`)
  if (text[0] !== '$') fail(0, 'must start with $')
  const steps: JsonPathStep[] = []
  let i = 1
  while (i < text.length) {
    let descendant = false
    const c = text[i]
    if (c === '.') {
      if (text[i + 1] === '.') {
        descendant = true
        i += 2
      } else i += 1
      if (i >= text.length) fail(i, 'ends after a dot: a name, * or [...] must follow')
      const d = text[i]
      if (d === '[') {
        if (!descendant) fail(i, '.[ is not valid: write [...] without the dot, or ..[...]')
        const { step, end } = bracket(text, i, true, fail)
        steps.push(step)
        i = end
      } else if (d === '*') {
        steps.push({ descendant, any: true, names: [], indices: [] })
        i++
      } else {
        let j = i
        while (j < text.length && NAME_CHAR.test(text[j] as string)) j++
        if (j === i)
          fail(i, `unexpected ${JSON.stringify(d)}: a member name, * or [...] must follow the dot (quote unusual names: ['a b'])`)
        steps.push({ descendant, any: false, names: [text.slice(i, j)], indices: [] })
        i = j
      }
    } else if (c === '[') {
      const { step, end } = bracket(text, i, false, fail)
      steps.push(step)
      i = end
    } else fail(i, `unexpected ${JSON.stringify(c)}: expected .name, ..name or [...]`)
    if (steps.length > MAX_STEPS) fail(i, `more than ${MAX_STEPS} steps`)
  }
  return { text, steps }
}

function bracket(
  text: string,
  open: number,
  descendant: boolean,
  fail: (at: number, why: string) => never,
): { step: JsonPathStep; end: number } {
  let i = open + 1
  const ws = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++
  }
  ws()
  if (text[i] === '*') {
    i++
    ws()
    if (text[i] !== ']') fail(i, 'expected ] after [*')
    return { step: { descendant, any: true, names: [], indices: [] }, end: i + 1 }
  }
  if (text[i] === '?') fail(i, 'filter expressions [?(...)] are not supported: a masked value must be recognised before it streams past')
  if (text[i] === '(') fail(i, 'script expressions [(...)] are not supported')
  const names: string[] = []
  const indices: number[] = []
  for (;;) {
    ws()
    const c = text[i]
    if (c === "'" || c === '"') {
      let j = i + 1
      let name = ''
      for (;;) {
        if (j >= text.length) fail(i, 'unterminated quoted name')
        const d = text[j] as string
        if (d === c) break
        if (d === '\\') {
          const e = text[j + 1]
          if (e === undefined) fail(j, 'unterminated quoted name')
          if (e === '\\' || e === "'" || e === '"' || e === '/') name += e
          else if (e === 'n') name += '\n'
          else if (e === 't') name += '\t'
          else if (e === 'r') name += '\r'
          else if (e === 'b') name += '\b'
          else if (e === 'f') name += '\f'
          else if (e === 'u') {
            const hex = text.slice(j + 2, j + 6)
            if (!/^[0-9A-Fa-f]{4}$/.test(hex)) fail(j, 'a \\u escape needs four hex digits')
            name += String.fromCharCode(Number.parseInt(hex, 16))
            j += 4
          } else fail(j, `unknown escape \\${e}`)
          j += 2
        } else {
          name += d
          j++
        }
      }
      if (!wellFormed(name)) fail(i, 'the name is not well-formed Unicode (a lone surrogate)')
      names.push(name)
      i = j + 1
    } else if (c !== undefined && /[-0-9]/.test(c)) {
      let j = i
      if (text[j] === '-') j++
      while (j < text.length && /[0-9]/.test(text[j] as string)) j++
      const lit = text.slice(i, j)
      if (text[j] === ':') fail(j, 'array slices are not supported: list the indices ([0,1,2]) or use [*]')
      if (lit.startsWith('-'))
        fail(i, 'negative indices are not supported: the array length is known only after its elements have streamed past')
      if (!/^(0|[1-9][0-9]{0,8})$/.test(lit)) fail(i, `${JSON.stringify(lit)} is not an array index (0 to 999999999, no leading zeros)`)
      indices.push(Number(lit))
      i = j
    } else if (c === ':') fail(i, 'array slices are not supported: list the indices ([0,1,2]) or use [*]')
    else fail(i, c === undefined ? 'unterminated [' : `unexpected ${JSON.stringify(c)} in [...]: expected 'name', an index or *`)
    ws()
    if (text[i] === ',') {
      i++
      continue
    }
    if (text[i] === ']') break
    if (text[i] === ':') fail(i, 'array slices are not supported: list the indices ([0,1,2]) or use [*]')
    fail(i, text[i] === undefined ? 'unterminated [' : `unexpected ${JSON.stringify(text[i])}: expected , or ]`)
  }
  return { step: { descendant, any: false, names, indices }, end: i + 1 }
}

/** The problem with a path, or null when it parses (for configuration checks). */
export function jsonPathProblem(text: string): string | null {
  try {
    parseJsonPath(text)
    return null
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** No lone surrogate: every UTF-16 surrogate is half of a pair. */
export function wellFormed(s: string): boolean {
  return !LONE_SURROGATE.test(s)
}
