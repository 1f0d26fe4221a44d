#!/usr/bin/env node
// The layering rule, checked on every source file (static imports, re-exports, `import()` and
// `require()`, type-only imports included), no import cycles anywhere, and no source file over
// 600 lines.
//
//   engine/            imports only engine/ (and packages, node: built-ins)
//   proxies/types.ts   the plugin contract: engine/ and itself
//   proxies/kit/       what plugins may use of the engine: engine/, proxies/types.ts, proxies/kit/
//   proxies/<plugin>/  proxies/types.ts, proxies/kit/index.ts, its own folder, and another
//                      plugin's public.ts
//   cli/gateway/       the composition root: engine/, proxies/types.ts, proxies/kit/, cli/gateway/
//   cli/, bench/, test/  anything but each other's internals (cli/ never imports test/ or bench/)
//   examples/plugins/  only packages and gatehouse/proxies/{types,kit}
//
// A relative import that resolves to no file fails, and so does a computed import() outside the
// plugin loader: what cannot be checked is refused.
//
// The size rule: every source file (tests and examples included) has at most MAX_LINES lines. A
// newcomer should be able to read any file whole, as one room with one job; past ~600 lines a file
// usually holds two jobs, and the next change makes it worse. The one exception is SQL column
// lineage, whose core is one recursive problem over the parse tree (OVERSIZE_OK below).
//
// Usage: node .ci/layers.mjs [root]   (exit 1 and one line per problem when the rule is broken)

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'

const SOURCE_DIRS = ['engine', 'proxies', 'cli', 'bench', 'test', 'examples']
/** Files that may import a computed specifier: the plugin loader, the bin entry loading dist/. */
const COMPUTED_IMPORT_OK = new Set(['cli/gateway/loader.ts', 'cli/bin/gatehouse.js'])
/** What a plugin may import of the package itself, by its published names. */
const PUBLISHED = new Set(['gatehouse/proxies/types', 'gatehouse/proxies/kit'])
/** The most lines a source file may have. */
export const MAX_LINES = 600
/**
 * Files allowed past MAX_LINES. lineage.ts is the one walk over a statement's parse tree for
 * masking: expressions, FROM items, CTEs, targets and writes are one recursive problem over shared
 * scopes (proxies/postgres/sql/README.md), and cut apart they would call each other across files.
 */
const OVERSIZE_OK = new Set(['proxies/postgres/sql/lineage.ts'])

/** Lines in a text, as `wc -l` counts them for a file that ends with a newline. @param {string} text @returns {number} */
export function lineCount(text) {
  if (text === '') return 0
  return text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
}

/** @param {string} dir @param {string} root @returns {string[]} */
function listSources(dir, root) {
  const out = []
  if (!existsSync(dir)) return out
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...listSources(p, root))
    else if (/\.(ts|mts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(relative(root, p).split(sep).join('/'))
  }
  return out
}

const IDENT = /[A-Za-z0-9_$]/
/** Tokens after which a `/` divides; anywhere else it starts a regular expression literal. */
const DIVIDE_AFTER = /^([A-Za-z0-9_$]+|\)|\]|\})$/
const KEYWORDS_BEFORE_REGEX = new Set([
  'return',
  'typeof',
  'case',
  'do',
  'else',
  'in',
  'of',
  'new',
  'delete',
  'void',
  'throw',
  'instanceof',
  'yield',
  'await',
])

/**
 * The file's tokens with comments dropped: words, string literals (kind 'str', value unquoted),
 * template literals (kind 'tpl') and single punctuation characters.
 * @param {string} src
 * @returns {{ kind: 'word' | 'str' | 'tpl' | 'punct'; value: string }[]}
 */
export function tokenize(src) {
  /** @type {{ kind: 'word' | 'str' | 'tpl' | 'punct'; value: string }[]} */
  const toks = []
  /** Brace depth at which each open template literal's `${` started. */
  const tplStack = []
  let depth = 0
  let i = 0
  const n = src.length
  const prevSignificant = () => (toks.length ? toks[toks.length - 1] : null)
  /** Reads a template literal body from i (just after ` or }), stopping after ` or at `${`. */
  const readTemplate = () => {
    while (i < n) {
      const c = src[i]
      if (c === '\\') i += 2
      else if (c === '`') {
        i++
        return
      } else if (c === '$' && src[i + 1] === '{') {
        i += 2
        tplStack.push(depth)
        depth++
        return
      } else i++
    }
  }
  while (i < n) {
    const c = src[i]
    if (c === '/' && src[i + 1] === '/') {
      while (i < n && src[i] !== '\n') i++
    } else if (c === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2)
      i = end < 0 ? n : end + 2
    } else if (c === "'" || c === '"') {
      let j = i + 1
      let v = ''
      while (j < n && src[j] !== c) {
        if (src[j] === '\\') {
          v += src[j + 1]
          j += 2
        } else v += src[j++]
      }
      toks.push({ kind: 'str', value: v })
      i = j + 1
    } else if (c === '`') {
      i++
      readTemplate()
      toks.push({ kind: 'tpl', value: '' })
    } else if (c === '}' && tplStack.length && tplStack[tplStack.length - 1] === depth - 1) {
      tplStack.pop()
      depth--
      i++
      readTemplate()
    } else if (c === '/') {
      const prev = prevSignificant()
      const divides = prev !== null && DIVIDE_AFTER.test(prev.value) && !KEYWORDS_BEFORE_REGEX.has(prev.value) && prev.kind !== 'str'
      if (divides || (prev && (prev.kind === 'str' || prev.kind === 'tpl'))) {
        toks.push({ kind: 'punct', value: '/' })
        i++
      } else {
        // A regular expression literal: to its closing slash outside a character class.
        let j = i + 1
        let inClass = false
        while (j < n && src[j] !== '\n') {
          if (src[j] === '\\') j += 2
          else if (inClass) {
            if (src[j] === ']') inClass = false
            j++
          } else if (src[j] === '[') {
            inClass = true
            j++
          } else if (src[j] === '/') break
          else j++
        }
        j++
        while (j < n && IDENT.test(src[j])) j++
        toks.push({ kind: 'punct', value: 're' })
        i = j
      }
    } else if (IDENT.test(c)) {
      let j = i
      while (j < n && IDENT.test(src[j])) j++
      toks.push({ kind: 'word', value: src.slice(i, j) })
      i = j
    } else if (/\s/.test(c)) i++
    else {
      if (c === '{') depth++
      else if (c === '}') depth--
      toks.push({ kind: 'punct', value: c })
      i++
    }
  }
  return toks
}

/**
 * Every module specifier a file names: `import … from`, `export … from`, `import 'x'`,
 * `import('x')`, `require('x')`. A computed one is reported as null.
 * @param {string} src
 * @returns {{ spec: string | null; dynamic: boolean }[]}
 */
export function importsOf(src) {
  const toks = tokenize(src)
  const out = []
  for (let k = 0; k < toks.length; k++) {
    const t = toks[k]
    const next = toks[k + 1]
    const prev = toks[k - 1]
    if (t.kind !== 'word') continue
    const member = prev && prev.kind === 'punct' && prev.value === '.'
    if (t.value === 'from' && next?.kind === 'str') out.push({ spec: next.value, dynamic: false })
    else if (t.value === 'import' && next?.kind === 'str' && !member) out.push({ spec: next.value, dynamic: false })
    else if ((t.value === 'import' || t.value === 'require') && !member && next?.kind === 'punct' && next.value === '(') {
      const arg = toks[k + 2]
      const close = toks[k + 3]
      const literal = arg?.kind === 'str' && close?.kind === 'punct' && (close.value === ')' || close.value === ',')
      // A computed require() is not one: this is ES modules, and `require(` is then a method's name.
      if (literal || t.value === 'import') out.push({ spec: literal ? arg.value : null, dynamic: true })
    }
  }
  return out
}

/** @param {string} root @param {string} from @param {string} spec @returns {string | null} */
function resolveRelative(root, from, spec) {
  const abs = resolve(root, dirname(from), spec)
  const candidates = [abs, abs.replace(/\.js$/, '.ts'), abs.replace(/\.mjs$/, '.mts'), `${abs}.ts`, join(abs, 'index.ts')]
  for (const c of candidates) if (existsSync(c) && statSync(c).isFile()) return relative(root, c).split(sep).join('/')
  return null
}

/** The plugin folder a proxies/ file belongs to, or null for proxies/types.ts and proxies/kit/. */
function pluginOf(file) {
  const m = /^proxies\/([^/]+)\//.exec(file)
  return m && m[1] !== 'kit' ? m[1] : null
}

/**
 * Why `file` may not import `target` (both repository paths), or null when it may.
 * @param {string} file @param {string} target @returns {string | null}
 */
export function layerProblem(file, target) {
  const top = file.split('/')[0]
  const ttop = target.split('/')[0]
  if (top === 'engine') return ttop === 'engine' ? null : 'the engine imports only engine/'
  if (file === 'proxies/types.ts') return ttop === 'engine' ? null : 'the plugin contract imports only engine/'
  if (file.startsWith('proxies/kit/')) {
    return ttop === 'engine' || target === 'proxies/types.ts' || target.startsWith('proxies/kit/')
      ? null
      : 'the kit imports only engine/, proxies/types.ts and proxies/kit/'
  }
  const plugin = pluginOf(file)
  if (plugin !== null) {
    if (target === 'proxies/types.ts' || target === 'proxies/kit/index.ts') return null
    if (target.startsWith(`proxies/${plugin}/`)) return null
    const other = pluginOf(target)
    if (other !== null && target === `proxies/${other}/public.ts`) return null
    if (ttop === 'engine') return 'a plugin reaches the engine only through proxies/kit (gatehouse/proxies/kit)'
    if (other !== null) return `a plugin imports another plugin only through its public.ts (proxies/${other}/public.ts)`
    return 'a plugin imports only proxies/types.ts, proxies/kit/index.ts, its own folder and other plugins\u2019 public.ts'
  }
  if (file.startsWith('cli/gateway/')) {
    return ttop === 'engine' || target.startsWith('cli/gateway/') || target === 'proxies/types.ts' || target.startsWith('proxies/kit/')
      ? null
      : 'cli/gateway/ imports engine/, proxies/types.ts and proxies/kit/ (built-in plugins are passed in by the rest of cli/)'
  }
  if (top === 'cli') return ttop === 'test' || ttop === 'bench' ? 'cli/ never imports test/ or bench/' : null
  if (top === 'examples') return 'an example plugin imports only packages and gatehouse/proxies/{types,kit}'
  return null
}

/**
 * @param {string} root
 * @returns {{ problems: string[]; files: number; edges: number }}
 */
export function checkLayers(root) {
  const files = SOURCE_DIRS.flatMap((d) => listSources(join(root, d), root))
  /** @type {Map<string, string[]>} */
  const graph = new Map()
  const problems = []
  let edges = 0
  for (const file of files) {
    const deps = []
    const src = readFileSync(join(root, file), 'utf8')
    const lines = lineCount(src)
    if (lines > MAX_LINES && !OVERSIZE_OK.has(file)) {
      problems.push(`${file}: ${lines} lines, over the ${MAX_LINES}-line limit (split it by job; helpers of tests go to test/helpers/)`)
    }
    for (const { spec, dynamic } of importsOf(src)) {
      if (spec === null) {
        if (!COMPUTED_IMPORT_OK.has(file)) problems.push(`${file}: a computed ${dynamic ? 'import()' : 'import'} cannot be checked`)
        continue
      }
      if (spec.startsWith('.')) {
        const target = resolveRelative(root, file, spec)
        if (target === null) {
          problems.push(`${file}: ${spec} resolves to no file`)
          continue
        }
        edges++
        deps.push(target)
        const why = layerProblem(file, target)
        if (why) problems.push(`${file}: imports ${target}${dynamic ? ' (dynamic)' : ''}: ${why}`)
      } else if (spec.startsWith('gatehouse/') || spec === 'gatehouse') {
        if (file.startsWith('examples/') ? !PUBLISHED.has(spec) : true) {
          problems.push(`${file}: imports ${spec}: only gatehouse/proxies/types and gatehouse/proxies/kit are published`)
        }
      }
    }
    graph.set(file, deps)
  }
  for (const cycle of cycles(graph)) problems.push(`import cycle: ${cycle.join(' → ')} → ${cycle[0]}`)
  return { problems, files: files.length, edges }
}

/**
 * The import cycles (one per strongly connected component of more than one file, or a file that
 * imports itself), each as a path through it. Tarjan's algorithm, iterative.
 * @param {Map<string, string[]>} graph
 * @returns {string[][]}
 */
export function cycles(graph) {
  let index = 0
  const idx = new Map()
  const low = new Map()
  const onStack = new Set()
  const stack = []
  const out = []
  for (const start of graph.keys()) {
    if (idx.has(start)) continue
    const work = [{ v: start, i: 0 }]
    idx.set(start, index)
    low.set(start, index++)
    stack.push(start)
    onStack.add(start)
    while (work.length) {
      const frame = work[work.length - 1]
      const deps = graph.get(frame.v) ?? []
      if (frame.i < deps.length) {
        const w = deps[frame.i++]
        if (!idx.has(w)) {
          idx.set(w, index)
          low.set(w, index++)
          stack.push(w)
          onStack.add(w)
          work.push({ v: w, i: 0 })
        } else if (onStack.has(w)) low.set(frame.v, Math.min(low.get(frame.v), idx.get(w)))
        continue
      }
      work.pop()
      if (work.length) {
        const parent = work[work.length - 1].v
        low.set(parent, Math.min(low.get(parent), low.get(frame.v)))
      }
      if (low.get(frame.v) === idx.get(frame.v)) {
        const scc = []
        let w
        do {
          w = stack.pop()
          onStack.delete(w)
          scc.push(w)
        } while (w !== frame.v)
        if (scc.length > 1 || (graph.get(frame.v) ?? []).includes(frame.v)) out.push(pathThrough(graph, new Set(scc), scc[scc.length - 1]))
      }
    }
  }
  return out
}

/** One cycle inside a strongly connected component, from `start` back to it (breadth-first). */
function pathThrough(graph, scc, start) {
  const prev = new Map([[start, null]])
  const queue = [start]
  while (queue.length) {
    const v = queue.shift()
    for (const w of graph.get(v) ?? []) {
      if (!scc.has(w)) continue
      if (w === start) {
        const path = [v]
        for (let p = prev.get(v); p !== null && p !== undefined; p = prev.get(p)) path.unshift(p)
        return path
      }
      if (!prev.has(w)) {
        prev.set(w, v)
        queue.push(w)
      }
    }
  }
  return [start]
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('layers.mjs')) {
  const root = resolve(process.argv[2] ?? join(dirname(new URL(import.meta.url).pathname), '..'))
  const { problems, files, edges } = checkLayers(root)
  for (const p of problems) console.error(p)
  if (problems.length) {
    console.error(
      `layers: ${problems.length} problem(s) in ${files} files (proxies/README.md and engine/README.md give the layering rule, .ci/layers.mjs the size rule)`,
    )
    process.exit(1)
  }
  console.log(`layers: ${files} files, ${edges} imports, no layering violation, no cycle, none over ${MAX_LINES} lines`)
}
