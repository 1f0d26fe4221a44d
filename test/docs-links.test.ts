// The documentation holds together: every relative link in the README, the top-level pages,
// docs/*.md and every folder's README points at a file of this repository that exists, and at a
// heading of that page when it names one (GitHub's anchor rules). The README stays a front door:
// under 15 KB, with topic detail in docs/.

import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const README_LIMIT_BYTES = 15_000
const SKIPPED_DIRS = new Set(['node_modules', 'dist', '.git', 'gatehouse-data', '.tmp'])

/** README.md files below the top level (every folder's README), skipping build output and modules. */
function folderReadmes(dir: string): string[] {
  const found: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory() || SKIPPED_DIRS.has(entry.name) || entry.name.startsWith('.')) continue
    const sub = join(dir, entry.name)
    if (existsSync(join(sub, 'README.md'))) found.push(join(sub, 'README.md'))
    found.push(...folderReadmes(sub))
  }
  return found
}

/** The pages whose links are checked. */
function pages(): string[] {
  const top = readdirSync(REPO)
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(REPO, f))
  const docs = readdirSync(join(REPO, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(REPO, 'docs', f))
  return [...new Set([...top, ...docs, ...folderReadmes(REPO)])].sort()
}

/** The text of a page outside fenced code blocks and inline code, where links are links. */
function prose(markdown: string): string[] {
  const lines: string[] = []
  let fence: string | null = null
  for (const line of markdown.split('\n')) {
    const marker = /^\s*(```|~~~)/.exec(line)
    if (marker) {
      if (fence === null) fence = marker[1] ?? null
      else if (marker[1] === fence) fence = null
      lines.push('')
      continue
    }
    lines.push(fence === null ? line.replace(/`[^`]*`/g, '``') : '')
  }
  return lines
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen. */
export function slug(heading: string): string {
  const text = heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .trim()
    .toLowerCase()
  return text.replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

const anchorCache = new Map<string, Set<string>>()

/** Every anchor a page's headings define, numbered as GitHub numbers repeated headings. */
function anchors(file: string): Set<string> {
  const cached = anchorCache.get(file)
  if (cached) return cached
  const seen = new Map<string, number>()
  const result = new Set<string>()
  let fence: string | null = null
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const marker = /^\s*(```|~~~)/.exec(line)
    if (marker) {
      if (fence === null) fence = marker[1] ?? null
      else if (marker[1] === fence) fence = null
      continue
    }
    if (fence !== null) continue
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (!heading) continue
    const base = slug(heading[1] ?? '')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    result.add(n === 0 ? base : `${base}-${n}`)
  }
  for (const m of readFileSync(file, 'utf8').matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) result.add(m[1] ?? '')
  anchorCache.set(file, result)
  return result
}

interface Link {
  readonly line: number
  readonly target: string
}

/** Inline links and images of a page: `[text](target)` and `[text](target "title")`. */
function links(file: string): Link[] {
  const found: Link[] = []
  prose(readFileSync(file, 'utf8')).forEach((line, i) => {
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) found.push({ line: i + 1, target: m[1] ?? '' })
  })
  return found
}

/** What is wrong with one link, or null. */
function problem(file: string, target: string): string | null {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return null // https:, mailto:: not checked here
  const [pathPart = '', anchor] = target.split('#', 2)
  const path = decodeURIComponent(pathPart)
  const resolved = path === '' ? file : resolve(dirname(file), path)
  const inside = relative(REPO, resolved)
  if (inside.startsWith('..') || inside.startsWith(sep)) return 'points outside the repository'
  if (!existsSync(resolved)) return 'no such file'
  if (anchor !== undefined && anchor !== '' && resolved.endsWith('.md') && statSync(resolved).isFile()) {
    if (!anchors(resolved).has(anchor)) return `no heading #${anchor} in ${relative(REPO, resolved)}`
  }
  return null
}

describe('documentation links', () => {
  test('the pages checked include the README, docs/ and folder READMEs', () => {
    const names = pages().map((p) => relative(REPO, p))
    for (const required of ['README.md', join('docs', 'README.md'), join('engine', 'README.md'), join('proxies', 'README.md')]) {
      assert.ok(names.includes(required), `${required} is checked`)
    }
  })

  test('every relative link points at an existing file and heading inside the repository', () => {
    const broken: string[] = []
    let checked = 0
    for (const file of pages()) {
      for (const { line, target } of links(file)) {
        checked++
        const why = problem(file, target)
        if (why) broken.push(`${relative(REPO, file)}:${line}: ${target}: ${why}`)
      }
    }
    assert.ok(checked > 100, `links were found (${checked})`)
    assert.deepEqual(broken, [])
  })

  test('the README is a front door: under 15 KB', () => {
    const size = statSync(join(REPO, 'README.md')).size
    assert.ok(size < README_LIMIT_BYTES, `README.md is ${size} bytes; move topic detail into docs/`)
  })

  test('the checker itself: a missing file, a missing heading and a way out are caught', () => {
    const readme = join(REPO, 'README.md')
    assert.equal(problem(readme, 'docs/no-such-page.md'), 'no such file')
    assert.match(problem(readme, 'docs/README.md#no-such-heading') ?? '', /no heading #no-such-heading/)
    assert.equal(problem(readme, '../outside.md'), 'points outside the repository')
    assert.equal(problem(readme, 'https://example.com/x'), null)
    assert.equal(slug('Testing policies: `gatehouse policy test`'), 'testing-policies-gatehouse-policy-test')
    assert.equal(slug('What policy sees (`input.command` for `ssh.exec`)'), 'what-policy-sees-inputcommand-for-sshexec')
  })
})
