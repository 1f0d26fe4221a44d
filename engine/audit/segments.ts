// Segment files and the writer lock. A segment is `<number>-<UTC stamp>.jsonl`; numbers start at
// 1 and grow by one, so a missing segment is visible from the names alone. Each process that
// writes opens a new segment; one process writes at a time (the lock).

import { closeSync, type Dirent, fsyncSync, openSync, readdirSync, readFileSync, readSync, fstatSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { GatehouseError } from '../errors.js'
import { splitLines } from './format.js'

const SEGMENT_RE = /^(\d{8,})-(\d{8}T\d{6}Z)\.jsonl$/
/** The directory of worker N's segment series under `serve --workers`: `audit/w<N>/`. */
const WORKER_DIR_RE = /^w([1-9]\d*)$/

export interface SegmentFile {
  readonly index: number
  readonly name: string
  readonly path: string
}

export function segmentName(index: number, date = new Date()): string {
  const stamp = date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')
  return `${String(index).padStart(8, '0')}-${stamp}.jsonl`
}

/**
 * Segment files in order, and every other entry of the directory that is not a known companion
 * (the writer lock): foreign files, which `audit verify` fails on and no reader opens. Files that
 * claim the same segment number are all foreign: nothing in a name says which one is genuine.
 */
export function listSegments(dir: string): { segments: SegmentFile[]; foreign: string[] } {
  let entries: Dirent[]
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { segments: [], foreign: [] }
    throw err
  }
  const byIndex = new Map<number, SegmentFile[]>()
  const foreign: string[] = []
  for (const entry of entries) {
    const name = entry.name
    if (name === LOCK_NAME) continue
    // A worker's series is a log of its own, read beside this one (seriesDirs).
    if (WORKER_DIR_RE.test(name) && entry.isDirectory()) continue
    const m = SEGMENT_RE.exec(name)
    // Only a regular file can be a segment: a directory or a link under a segment's name is not
    // opened by any reader (verify names it).
    if (!m || !entry.isFile()) {
      foreign.push(name)
      continue
    }
    const index = Number(m[1])
    const same = byIndex.get(index)
    const seg = { index, name, path: join(dir, name) }
    if (same) same.push(seg)
    else byIndex.set(index, [seg])
  }
  const segments: SegmentFile[] = []
  for (const same of byIndex.values()) {
    if (same.length === 1) segments.push(same[0] as SegmentFile)
    else foreign.push(...same.map((s) => s.name))
  }
  segments.sort((a, b) => a.index - b.index)
  foreign.sort()
  return { segments, foreign }
}

/**
 * The audit directory's segment series: its own (a single-process gateway's) first, then each
 * worker's (`w1/`, `w2/`, … in order) under `serve --workers N`. Each is a hash chain of its own;
 * readers show them together, ordered by time.
 */
export function seriesDirs(auditDir: string): string[] {
  let entries: Dirent[]
  try {
    entries = readdirSync(auditDir, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [auditDir]
    throw err
  }
  const workers = entries
    .filter((e) => e.isDirectory() && WORKER_DIR_RE.test(e.name))
    .map((e) => Number(e.name.slice(1)))
    .sort((a, b) => a - b)
  return [auditDir, ...workers.map((n) => join(auditDir, `w${n}`))]
}

/** The first `bytes` of a file (the whole file if smaller). */
export function readHead(path: string, bytes: number): Buffer {
  const fd = openSync(path, 'r')
  try {
    const buf = Buffer.alloc(bytes)
    const n = readSync(fd, buf, 0, bytes, 0)
    return buf.subarray(0, n)
  } finally {
    closeSync(fd)
  }
}

/** The last `bytes` of a file (the whole file if smaller). */
export function readTail(path: string, bytes: number): Buffer {
  const fd = openSync(path, 'r')
  try {
    const size = fstatSync(fd).size
    const n = Math.min(size, bytes)
    const buf = Buffer.alloc(n)
    let got = 0
    while (got < n) {
      const r = readSync(fd, buf, got, n - got, size - n + got)
      if (r === 0) break
      got += r
    }
    return buf.subarray(0, got)
  } finally {
    closeSync(fd)
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export const LOCK_NAME = 'writer.lock'

/** The pid of a live process holding the writer lock of `dir`, or null: nobody is writing the log. */
export function liveWriter(dir: string): number | null {
  let owner = Number.NaN
  try {
    owner = Number.parseInt(readFileSync(join(dir, LOCK_NAME), 'utf8'), 10)
  } catch {
    return null
  }
  return Number.isInteger(owner) && owner > 0 && pidAlive(owner) ? owner : null
}

/**
 * Takes the writer lock: `<dir>/writer.lock` holding the owner's pid, created exclusively. A lock
 * left by a dead process (a crash, `kill -9`) is taken over. Returns the release function.
 */
export function acquireWriterLock(dir: string): () => void {
  const file = join(dir, LOCK_NAME)
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number
    try {
      fd = openSync(file, 'wx', 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new GatehouseError('GH_ERR_AUDIT', `${file}: cannot create the audit writer lock`, { cause: err })
      }
      let owner = Number.NaN
      try {
        owner = Number.parseInt(readFileSync(file, 'utf8'), 10)
      } catch {
        /* vanished or unreadable: retry */
      }
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner)) {
        throw new GatehouseError('GH_ERR_AUDIT', `another process (pid ${owner}) is writing the audit log in ${dir}`)
      }
      if (owner === process.pid) throw new GatehouseError('GH_ERR_AUDIT', `this process already writes the audit log in ${dir}`)
      try {
        unlinkSync(file)
      } catch {
        /* someone else took it over; retry */
      }
      continue
    }
    writeSync(fd, `${process.pid}\n`)
    closeSync(fd)
    let released = false
    return () => {
      if (released) return
      released = true
      try {
        if (Number.parseInt(readFileSync(file, 'utf8'), 10) === process.pid) unlinkSync(file)
      } catch {
        /* already gone */
      }
    }
  }
  throw new GatehouseError('GH_ERR_AUDIT', `${file}: cannot take the audit writer lock`)
}

/** The time of the last whole event of a segment file, or null if none can be read. */
export function lastEventTime(path: string): string | null {
  const { lines } = splitLines(readTail(path, 64 * 1024))
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /"time":"([^"]+)"/.exec((lines[i] as Buffer).toString('latin1', 0, 300))
    if (m) return m[1] as string
  }
  return null
}

/** Makes a new file's directory entry durable. */
export function syncDir(dir: string): void {
  let fd = -1
  try {
    fd = openSync(dir, 'r')
    fsyncSync(fd)
  } catch {
    /* not supported everywhere; the data itself is what is synced */
  } finally {
    if (fd >= 0) closeSync(fd)
  }
}

/**
 * The sealed segments before segment `current` whose last event is older than `before` (RFC 3339),
 * oldest first and without gaps: what retention may remove.
 */
export function prunableSegments(dir: string, current: number, before: string): SegmentFile[] {
  const cutoff = Date.parse(before)
  const removable: SegmentFile[] = []
  for (const seg of listSegments(dir).segments) {
    if (seg.index >= current) break
    const last = lastEventTime(seg.path)
    if (last === null || Date.parse(last) >= cutoff) break
    removable.push(seg)
  }
  return removable
}
