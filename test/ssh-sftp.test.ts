// The SFTP request observer: file operations read from the client's stream, split at every
// offset, and a frame over the cap stopping the observation instead of buffering it.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { MAX_SFTP_PACKET, type SftpOperation, SftpObserver } from '../proxies/ssh/sftp.js'

function s(v: string): Buffer {
  const b = Buffer.from(v)
  const n = Buffer.alloc(4)
  n.writeUInt32BE(b.length)
  return Buffer.concat([n, b])
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v)
  return b
}
function packet(type: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([type]), u32(7), ...parts])
  return Buffer.concat([u32(body.length), body])
}

const stream = Buffer.concat([
  Buffer.concat([u32(5), Buffer.from([1]), u32(3)]), // INIT, version 3
  packet(3, s('/srv/up.bin'), u32(0x1a), u32(0)), // OPEN write|creat|trunc
  packet(6, s('handle')), // WRITE-ish noise (CLOSE): not a file operation
  packet(3, s('/etc/hosts'), u32(0x1), u32(0)), // OPEN read
  packet(18, s('/srv/a'), s('/srv/b')), // RENAME
  packet(13, s('/srv/b')), // REMOVE
])
const want: SftpOperation[] = [
  { operation: 'open', path: '/srv/up.bin', mode: 'write' },
  { operation: 'open', path: '/etc/hosts', mode: 'read' },
  { operation: 'rename', path: '/srv/a', target: '/srv/b' },
  { operation: 'remove', path: '/srv/b' },
]

describe('sftp observer', () => {
  test('reads every file operation, split at every offset', () => {
    for (let i = 0; i <= stream.length; i++) {
      for (const j of [i, Math.min(stream.length, i + 3)]) {
        const got: SftpOperation[] = []
        const o = new SftpObserver(
          (op) => got.push(op),
          () => assert.fail('stopped'),
        )
        o.push(stream.subarray(0, i))
        o.push(stream.subarray(i, j))
        o.push(stream.subarray(j))
        assert.deepEqual(got, want, `split at ${i}/${j}`)
      }
    }
  })

  test('a frame over the cap stops the observation without buffering it', () => {
    let why = ''
    const o = new SftpObserver(
      () => assert.fail('no operation expected'),
      (w) => {
        why = w
      },
    )
    o.push(u32(MAX_SFTP_PACKET + 1))
    o.push(Buffer.alloc(1000))
    assert.match(why, /over 262144/)
  })
})
