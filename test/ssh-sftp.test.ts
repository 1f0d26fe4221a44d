// The SFTP gate: requests split at every offset are forwarded byte for byte when allowed, answered
// with SSH_FXP_STATUS when refused, never forwarded unjudged; the gateway's own replies are slipped
// in between the target's packets, never inside one; a packet over the cap ends the channel.

import assert from 'node:assert/strict'
import { posix } from 'node:path'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { MAX_SFTP_PACKET, SftpReplyInjector, SftpRequestFilter, type SftpVerdict } from '../proxies/ssh/sftp.js'
import { FX_OP_UNSUPPORTED, FX_PERMISSION_DENIED, type SftpOperation } from '../proxies/ssh/sftp-wire.js'
import type { TargetFs } from '../proxies/ssh/sftp-paths.js'

/** A target whose paths are all plain (no links): realpath is the lexical resolution against /home/u. */
const identityFs: TargetFs = {
  realpath: async (p) => posix.resolve('/home/u', p),
  lstat: async () => 'file',
}

function s(v: string | Buffer): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v) : v
  const n = Buffer.alloc(4)
  n.writeUInt32BE(b.length)
  return Buffer.concat([n, b])
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v)
  return b
}
function packet(type: number, id: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([type]), u32(id), ...parts])
  return Buffer.concat([u32(body.length), body])
}

/** Splits a byte stream into packets (length-prefixed). */
function packets(b: Buffer): Buffer[] {
  const out: Buffer[] = []
  let at = 0
  while (at < b.length) {
    const n = b.readUInt32BE(at)
    out.push(b.subarray(at, at + 4 + n))
    at += 4 + n
  }
  assert.equal(at, b.length, 'the stream ends on a packet boundary')
  return out
}

const init = Buffer.concat([u32(5), Buffer.from([1]), u32(3)])
const openWrite = packet(3, 1, s('/srv/up.bin'), u32(0x1a), u32(0))
const write = packet(6, 2, s('h1'), Buffer.alloc(8), s(Buffer.alloc(3000, 7)))
const close = packet(4, 3, s('h1'))
const openShadow = packet(3, 4, s('/etc/shadow'), u32(0x1), u32(0))
const rename = packet(18, 5, s('/srv/a'), s('/srv/b'))
const remove = packet(13, 6, s('/srv/b'))
const posixRename = packet(200, 7, s('posix-rename@openssh.com'), s('/srv/c'), s('/etc/cron.d/x'))
const unknownExt = packet(200, 8, s('evil@example.com'), s('/x'))
const fsetstat = packet(10, 9, s('h2'), u32(0))
const symlink = packet(20, 10, s('/etc/passwd'), s('/srv/link'))

const stream = Buffer.concat([init, openWrite, write, close, openShadow, rename, remove, posixRename, unknownExt, fsetstat, symlink])
const forwardedWant = Buffer.concat([init, openWrite, write, close, rename, remove, fsetstat])
const decidedWant: SftpOperation[] = [
  { operation: 'write', path: '/srv/up.bin', mode: 'write,create,truncate' },
  { operation: 'read', path: '/etc/shadow', mode: 'read' },
  { operation: 'rename', path: '/srv/a', target: '/srv/b' },
  { operation: 'remove', path: '/srv/b' },
  { operation: 'rename', path: '/srv/c', target: '/etc/cron.d/x' },
  { operation: 'setstat', path: '/srv/h2-file' },
  { operation: 'symlink', path: '/srv/link', target: '/etc/passwd' },
]

/** The policy of these tests: nothing under /etc, in either name of an operation. */
function verdict(op: SftpOperation): SftpVerdict {
  return op.path.startsWith('/etc/') || op.target?.startsWith('/etc/')
    ? { allow: false, message: 'denied: not under /etc' }
    : { allow: true }
}

async function runFilter(pieces: Buffer[]): Promise<{ forwarded: Buffer; replies: Buffer[]; decided: SftpOperation[] }> {
  const out: Buffer[] = []
  const replies: Buffer[] = []
  const decided: SftpOperation[] = []
  let paused = false
  const f = new SftpRequestFilter({
    forward: (b) => {
      out.push(Buffer.from(b))
      return true
    },
    reply: (p) => replies.push(p),
    decide: async (op) => {
      decided.push(op)
      await new Promise((r) => setImmediate(r))
      return verdict(op)
    },
    refused: () => undefined,
    fs: async () => identityFs,
    resume: () => {
      paused = false
    },
    fail: (why) => assert.fail(why),
  })
  for (const p of pieces) {
    // Like a stream: no new data while the filter asked for a pause.
    while (paused) await new Promise((r) => setImmediate(r))
    if (!f.push(p)) paused = true
  }
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r))
  return { forwarded: Buffer.concat(out), replies, decided }
}

function statusOf(p: Buffer): { id: number; code: number; message: string } {
  assert.equal(p[4], 101)
  const n = p.readUInt32BE(13)
  return { id: p.readUInt32BE(5), code: p.readUInt32BE(9), message: p.toString('utf8', 17, 17 + n) }
}

describe('sftp gate', () => {
  test('decides every file operation, forwards the allowed ones byte for byte, answers the refused ones, split at every offset', async () => {
    // FSETSTAT names a handle: the filter learns its path from the target's HANDLE reply.
    const opened = packet(3, 21, s('/srv/h2-file'), u32(0x2), u32(0))
    for (let i = 0; i <= stream.length; i += i < 200 ? 1 : 97) {
      for (const j of [i, Math.min(stream.length, i + 5)]) {
        const out: Buffer[] = []
        const replies: Buffer[] = []
        const decided: SftpOperation[] = []
        let paused = false
        const f = new SftpRequestFilter({
          forward: (b) => {
            out.push(Buffer.from(b))
            // The target answers the open of /srv/h2-file with handle h2, that of /srv/up.bin with h1.
            if (b.length > 4 && b.equals(opened)) f.handleReply(21, Buffer.from('h2'))
            if (b.length > 4 && b.equals(openWrite)) f.handleReply(1, Buffer.from('h1'))
            return true
          },
          reply: (p) => replies.push(p),
          decide: async (op) => {
            decided.push(op)
            await new Promise((r) => setImmediate(r))
            return verdict(op)
          },
          refused: () => undefined,
          fs: async () => identityFs,
          resume: () => {
            paused = false
          },
          fail: (why) => assert.fail(why),
        })
        const whole = Buffer.concat([opened, stream])
        const cuts = [0, opened.length + i, opened.length + j, whole.length]
        for (let k = 0; k < 3; k++) {
          while (paused) await new Promise((r) => setImmediate(r))
          if (!f.push(whole.subarray(cuts[k], cuts[k + 1]))) paused = true
        }
        for (let k = 0; k < 40; k++) await new Promise((r) => setImmediate(r))
        assert.deepEqual(Buffer.concat(out), Buffer.concat([opened, forwardedWant]), `forwarded, split at ${i}/${j}`)
        assert.deepEqual(
          decided.slice(1).map(({ requested_path: _p, requested_target: _t, ...op }) => op),
          decidedWant,
          `decided, split at ${i}/${j}`,
        )
        const st = replies.map(statusOf)
        assert.deepEqual(
          st.map((r) => [r.id, r.code]),
          [
            [4, FX_PERMISSION_DENIED],
            [7, FX_PERMISSION_DENIED],
            [8, FX_OP_UNSUPPORTED],
            [10, FX_PERMISSION_DENIED],
          ],
        )
        assert.match(st[0]?.message ?? '', /gatehouse: denied: not under \/etc/)
      }
    }
  })

  test('a refused decision and a failing decider both refuse; nothing is forwarded unjudged', async () => {
    const r = await runFilter([Buffer.concat([init, openShadow])])
    assert.deepEqual(r.forwarded, init)
    assert.equal(r.replies.length, 1)
    const out: Buffer[] = []
    const replies: Buffer[] = []
    const f = new SftpRequestFilter({
      forward: (b) => {
        out.push(b)
        return true
      },
      reply: (p) => replies.push(p),
      decide: () => Promise.reject(new Error('engine down')),
      refused: () => undefined,
      fs: async () => identityFs,
      resume: () => undefined,
      fail: (why) => assert.fail(why),
    })
    f.push(Buffer.concat([init, openWrite]))
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(Buffer.concat(out), init)
    assert.equal(statusOf(replies[0] as Buffer).code, FX_PERMISSION_DENIED)
  })

  test("the client's EOF is passed on only after every request before it was decided and sent", async () => {
    const events: string[] = []
    let sent = 0
    const f = new SftpRequestFilter({
      forward: (b) => {
        sent += b.length
        events.push(`forwarded ${sent}`)
        return true
      },
      reply: () => undefined,
      decide: async () => {
        await new Promise((r) => setTimeout(r, 20))
        return { allow: true }
      },
      refused: () => undefined,
      fs: async () => identityFs,
      resume: () => undefined,
      fail: (why) => assert.fail(why),
    })
    f.push(Buffer.concat([init, openWrite]))
    f.finish(() => events.push('end'))
    assert.equal(events.at(-1), `forwarded ${init.length}`)
    await new Promise((r) => setTimeout(r, 60))
    assert.deepEqual(events.slice(-2), [`forwarded ${init.length + openWrite.length}`, 'end'])
  })

  test('property: any packets, split anywhere, any verdicts: exactly the allowed bytes go through, each refusal (and each unknown handle) is answered', async () => {
    const GATED = [3, 7, 9, 11, 13, 14, 15, 17, 18, 19]
    // A packet kind and its verdict; the path is made unique per packet (/p<index>) so the decider
    // knows which one it is asked about.
    const itemArb = fc.tuple(
      fc.oneof(
        fc.constantFrom(...GATED).map((t) => ({ t, data: Buffer.alloc(0) })),
        fc.uint8Array({ maxLength: 5000 }).map((d) => ({ t: 6, data: Buffer.from(d) })),
        fc.uint8Array({ maxLength: 50 }).map((d) => ({ t: 5, data: Buffer.from(d) })),
      ),
      fc.boolean(),
    )
    await fc.assert(
      fc.asyncProperty(
        fc.array(itemArb, { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 4000 }), { maxLength: 10 }),
        async (items, cuts) => {
          const allowed = new Set<string>()
          const pkts = items.map(([{ t, data }, ok], i) => {
            const path = `/p${i}`
            if (ok) allowed.add(path)
            if (t === 3) return packet(3, i, s(path), u32(i & 0x3f), u32(0))
            if (t === 18) return packet(18, i, s(path), s('/new'))
            if (GATED.includes(t)) return packet(t, i, s(path), u32(0))
            return packet(t, i, s('h'), Buffer.alloc(8), s(data))
          })
          const isGatedPkt = (p: Buffer): boolean => GATED.includes(p[4] as number)
          const pathOf = (p: Buffer): string => `/p${p.readUInt32BE(5)}`
          const whole = Buffer.concat(pkts)
          // READ and WRITE name handle "h", which no open returned: refused like a refused path.
          const wantOut = Buffer.concat(pkts.filter((p) => isGatedPkt(p) && allowed.has(pathOf(p))))
          const wantReplies = pkts.filter((p) => !isGatedPkt(p) || !allowed.has(pathOf(p))).map((p) => p.readUInt32BE(5))
          const out: Buffer[] = []
          const replies: number[] = []
          let paused = false
          const f = new SftpRequestFilter({
            forward: (b) => {
              out.push(Buffer.from(b))
              return true
            },
            reply: (r) => replies.push(r.readUInt32BE(5)),
            decide: async (op) => {
              await Promise.resolve()
              return allowed.has(op.path) ? { allow: true } : { allow: false, message: 'no' }
            },
            refused: () => undefined,
            fs: async () => identityFs,
            resume: () => {
              paused = false
            },
            fail: (why) => assert.fail(why),
          })
          let at = 0
          for (const c of [...cuts, whole.length]) {
            while (paused) await new Promise((r) => setImmediate(r))
            const end = Math.min(whole.length, at + c)
            if (end > at && !f.push(whole.subarray(at, end))) paused = true
            at = end
          }
          for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r))
          assert.deepEqual(Buffer.concat(out), wantOut)
          assert.deepEqual(replies, wantReplies)
        },
      ),
      { numRuns: 200 },
    )
  })

  test('a request type the gateway does not know (SFTP v6 LINK, say) is refused, never forwarded', () => {
    const out: Buffer[] = []
    const replies: Buffer[] = []
    const f = new SftpRequestFilter({
      forward: (b) => {
        out.push(Buffer.from(b))
        return true
      },
      reply: (p) => replies.push(p),
      decide: () => assert.fail('no decision expected'),
      refused: () => undefined,
      fs: async () => identityFs,
      resume: () => undefined,
      fail: (why) => assert.fail(why),
    })
    const link = packet(21, 42, s('/srv/new'), s('/etc/shadow'), Buffer.from([1]))
    const bare = Buffer.concat([u32(1), Buffer.from([13])]) // a REMOVE with no id or path
    f.push(Buffer.concat([init, link, bare]))
    assert.deepEqual(Buffer.concat(out), init)
    assert.deepEqual(
      replies.map((r) => [statusOf(r).id, statusOf(r).code]),
      [
        [42, FX_OP_UNSUPPORTED],
        [0, FX_OP_UNSUPPORTED],
      ],
    )
  })

  test('a packet over the cap ends the channel without buffering it', () => {
    let why = ''
    const f = new SftpRequestFilter({
      forward: () => true,
      reply: () => assert.fail('no reply expected'),
      decide: () => assert.fail('no decision expected'),
      refused: () => undefined,
      fs: async () => identityFs,
      resume: () => undefined,
      fail: (w) => {
        why = w
      },
    })
    f.push(Buffer.concat([u32(MAX_SFTP_PACKET + 1), Buffer.from([3])]))
    f.push(Buffer.alloc(1000))
    assert.match(why, /over 262144/)
  })

  test('replies are slipped in between the target packets, and handles are learnt, split at every offset', () => {
    const version = Buffer.concat([u32(5), Buffer.from([2]), u32(3)])
    const handle = packet(102, 21, s('h2'))
    const data = packet(103, 22, s(Buffer.alloc(2000, 9)))
    const status = packet(101, 23, u32(0), s('ok'), s(''))
    const server = Buffer.concat([version, handle, data, status])
    const mine = packet(101, 4, u32(FX_PERMISSION_DENIED), s('gatehouse: denied'), s(''))
    for (let i = 0; i <= server.length; i++) {
      const sent: Buffer[] = []
      const handles: [number, string][] = []
      const inj = new SftpReplyInjector(
        (b) => {
          sent.push(Buffer.from(b))
          return true
        },
        (id, h) => handles.push([id, h.toString()]),
        () => undefined,
      )
      inj.write(server.subarray(0, i))
      inj.inject(mine)
      inj.write(server.subarray(i))
      const got = packets(Buffer.concat(sent))
      assert.equal(got.length, 5, `split at ${i}`)
      assert.ok(
        got.some((p) => p.equals(mine)),
        `the injected reply is whole, split at ${i}`,
      )
      assert.deepEqual(
        got.filter((p) => !p.equals(mine)),
        [version, handle, data, status],
      )
      assert.deepEqual(handles, [[21, 'h2']])
    }
  })
})
