// What the audit writer puts in the chain besides callers' events: the lines it queues, the
// gateway's own events, and the signed records (segment headers and checkpoints) whose text depends
// on their position and the hash before them, so they are made at write time.

import {
  CHECKPOINT_TYPE,
  type CheckpointReason,
  checkpointExtra,
  type EventText,
  eventId,
  eventJsonText,
  SEGMENT_TYPE,
  signedMessage,
  type UnattestedRange,
} from './format.js'
import type { AuditSigner } from './keys.js'
import type { AuditEvent, AuditEventType } from '../types.js'

/** One line to write. `json` is the event's JSON, or built at write time from its position. */
export interface Pending {
  readonly time: string
  readonly event: AuditEvent
  json: EventText | null
  readonly make: ((n: number, prev: string) => string) | null
  /** An `appendGrouped` caller waiting for this line's write (settled by the writer). */
  readonly waiter?: { readonly resolve: () => void; readonly reject: (err: Error) => void }
}

const RESERVED_KEYS = ['h', 'prev', 'id', 'time']

/** An event the audit log writes about itself (no session, no chain). */
export function internalEvent(type: AuditEventType, fields: Record<string, unknown>): AuditEvent {
  return { type, session: null, chain: [], connection: null, ...fields }
}

/** The event's JSON text; keys the chain owns are dropped so no event can shadow them. */
export function eventJson(event: AuditEvent): EventText {
  for (const k of RESERVED_KEYS) {
    if (k in event) {
      const copy: Record<string, unknown> = { ...event }
      for (const r of RESERVED_KEYS) delete copy[r]
      return eventJsonText(copy)
    }
  }
  return eventJsonText(event)
}

/**
 * A signed checkpoint: it signs the position and hash of the line before it. A `recovery`
 * checkpoint also names a torn partial line it seals and the events it does not vouch for
 * (`unattested`: null when there are none; undefined on other checkpoints, which omit the field).
 */
export function checkpointRecord(
  signer: AuditSigner,
  log: string,
  reason: CheckpointReason,
  torn: { bytes: number; sha256: string } | null,
  unattested?: UnattestedRange | null,
): Pending {
  const time = new Date().toISOString()
  const event = internalEvent(CHECKPOINT_TYPE, { log, reason })
  const marked =
    unattested === undefined
      ? {}
      : {
          unattested: unattested
            ? { from: eventId(log, unattested.from), to: eventId(log, unattested.to), events: unattested.to - unattested.from + 1 }
            : null,
        }
  return {
    time,
    event,
    json: null,
    make: (n, prev) => {
      const sig = signer.sign(signedMessage('checkpoint', log, n - 1, prev, time, checkpointExtra(torn ? torn.sha256 : null, unattested)))
      return JSON.stringify({ ...event, ...(torn ? { torn } : {}), ...marked, key: signer.kid, sig })
    },
  }
}

/** The signed header that starts segment `index`: readers trust a segment file by it. */
export function segmentRecord(signer: AuditSigner, log: string, index: number): Pending {
  const time = new Date().toISOString()
  const event = internalEvent(SEGMENT_TYPE, { log, segment: index })
  return {
    time,
    event,
    json: null,
    make: (n, prev) => {
      const sig = signer.sign(signedMessage('segment', log, n, prev, time, String(index)))
      return JSON.stringify({ ...event, key: signer.kid, sig })
    },
  }
}
