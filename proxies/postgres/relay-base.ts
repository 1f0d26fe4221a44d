// The admitted session's state, shared by the layers of the relay (result-masking.ts, results.ts,
// pipeline.ts, relay.ts): the session, the server connection and the SQL judge — never null here,
// since a relay exists only once the client is admitted and the server connection is open — the
// bytes queued for the server, and the queue of answers expected from it.

import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { lexicallySensitive } from './sql/lexical.js'
import type { SqlAnalyzer } from './sql/index.js'
import type { FastPathSession, PluginContext } from '../types.js'
import { BackendScanner } from './backend.js'
import type { CatalogCache, SessionCatalog } from './catalog.js'
import type { MessageReader } from './frontend.js'
import * as hold from './hold.js'
import type { StatementMaskPlan } from './masking.js'
import { type NamedEntry, NamedObjects } from './named.js'
import type { SessionSql, StatementEffect } from './statements.js'
import type { Upstream, UpstreamOptions } from './upstream.js'
import type { MaskObligation } from '../kit/index.js'
import type { BackendHandler } from './backend.js'

export interface CancelTarget {
  readonly secret: Buffer
  cancel(): void
}

/** A live client connection, as the plugin sees it (shutdown ends them all). */
export interface LiveConnection {
  fatal(code: string, message: string, hint?: string): void
  readonly sessionId: string | null
}

/** State the plugin shares across connections: the cancel-key registry and live connections. */
export interface PgShared {
  readonly ctx: PluginContext<'fastPath'>
  readonly cancelKeys: Map<number, CancelTarget>
  readonly connections: Set<LiveConnection>
  readonly analyzer: SqlAnalyzer
  readonly catalogs: CatalogCache
  readonly maskKey: Buffer
}

/** What the relay asks of the client connection it serves (connection.ts). */
export interface RelayHost {
  /** The session is admitted and not closed. */
  isReady(): boolean
  isClosed(): boolean
  fatal(code: string, message: string, hint?: string): void
  close(reason: string, last?: Buffer): void
  protocolFailure(err: unknown): void
}

/** The admitted session, as connection.ts hands it to the relay. */
export interface Admitted {
  readonly host: RelayHost
  readonly shared: PgShared
  readonly log: Logger
  readonly client: Socket | TLSSocket
  /** The client's framed messages (bytes sent before admission are already in it). */
  readonly reader: MessageReader
  readonly session: FastPathSession
  readonly upstream: Upstream
  /** How the gateway reaches the server for this session (cancel, catalog re-reads). */
  readonly upstreamOptions: UpstreamOptions
  readonly sql: SessionSql
  /** The session's lineage catalog (views, masking). */
  readonly catalog: SessionCatalog
  readonly sessionUser: string
  /** Aborted when the connection closes. */
  readonly signal: AbortSignal
  /** The last audit `seq` used before admission (the startup settings' events). */
  readonly seq: number
}

/** An executed statement waiting for its result, for the `result` audit event. */
export interface StatementRecord {
  readonly seq: number
  /** performance.now() when it was sent (a number: no BigInt per statement). */
  readonly started: number
  rows: number
  tags: string[]
  error: { code: string; message: string } | null
  /** The gateway's own error, sent in place of the stand-in's error when the statement was refused. */
  readonly replacement: Buffer | null
  /** The statement may hold a secret (redact.ts): the server's error text, which can quote part of
   *  it (a malformed connection string, a syntax error), is not audited. */
  readonly secret?: boolean
  /** Per statement of the query, what it changes in the session once it completes. */
  readonly effects: readonly StatementEffect[]
  /** Per statement of the query, how its results are masked (null: not masked). */
  readonly masks: readonly (StatementMaskPlan | null)[] | null
  /** The chain's mask obligations for this statement: what the result backstop checks fields against. */
  readonly obligations?: readonly MaskObligation[]
}

/** What the server will answer next, in the order the messages were sent. */
export enum Expect {
  Query,
  Parse,
  Bind,
  Describe,
  Execute,
  Close,
  Sync,
}

export interface Expectation {
  readonly kind: Expect
  readonly entry: NamedEntry | null
  readonly record: StatementRecord | null
  /** For Execute: the portal it runs; for Describe: what is described (result shapes, for masking);
   * for Close: what the name held when it was sent. */
  readonly target?: NamedEntry | null
  /** For Close: the name, forgotten once the server confirms (a Close it skips leaves it). */
  readonly close?: { readonly names: Map<string, NamedEntry>; readonly name: string }
}

/** Settings the gateway pins (upper case): the server must keep reading SQL as the gateway does. */
const PINNED_LEXING: ReadonlyMap<string, string> = new Map([
  ['standard_conforming_strings', 'ON'],
  ['client_encoding', 'UTF8'],
])

export abstract class RelayBase implements BackendHandler {
  protected readonly host: RelayHost
  protected readonly shared: PgShared
  protected readonly log: Logger
  protected readonly client: Socket | TLSSocket
  protected readonly reader: MessageReader
  protected readonly session: FastPathSession
  readonly upstream: Upstream
  protected readonly upstreamOptions: UpstreamOptions
  protected readonly sql: SessionSql
  protected readonly scanner: BackendScanner
  protected readonly signal: AbortSignal
  protected readonly named: NamedObjects
  /** Client messages queued for the server, written together at the end of a read. */
  protected out: Buffer[] = []
  protected expectations: Expectation[] = []
  protected expectHead = 0
  /** Query and Sync messages sent whose ReadyForQuery has not come back. */
  protected readiesPending = 0
  protected readyWaiters: (() => void)[] = []
  protected seq = 0
  /** `SET gatehouse.approval_wait|reason` (hold.ts); aborted by a CancelRequest while a statement is held. */
  protected readonly approvalPrefs = new hold.ApprovalPrefs()
  protected holdCancel: AbortController | null = null
  /** The scanner reads result shapes once this session has had a mask obligation. */
  protected maskingOn = false
  /** Extended-protocol messages were sent since the last Sync: the server is mid-batch. */
  protected openBatch = false
  /** A statement that may have changed a setting was sent and its ReadyForQuery has not come. */
  protected lexicalUnsettled = false
  /** Such a statement is in the extended-protocol batch not yet ended by Sync. */
  protected openBatchOpaque = false

  constructor(a: Admitted) {
    this.host = a.host
    this.shared = a.shared
    this.log = a.log
    this.client = a.client
    this.reader = a.reader
    this.session = a.session
    this.upstream = a.upstream
    this.upstreamOptions = a.upstreamOptions
    this.sql = a.sql
    this.signal = a.signal
    this.seq = a.seq
    this.scanner = new BackendScanner(this, a.shared.ctx.limits.maxMessageBytes)
    this.named = new NamedObjects(() => this.flushToServer())
  }

  abstract onStreamed(type: number): void
  abstract onRow(type: number, message: Buffer): Buffer | null
  abstract onMessage(type: number, body: Buffer): Buffer | null
  /** The expectation at the head of the queue changed (result-masking.ts). */
  protected abstract headChanged(): void

  protected fatal(code: string, message: string, hint?: string): void {
    this.host.fatal(code, message, hint)
  }

  /** A method, not a field read, so TypeScript does not carry narrowing across an await. */
  protected isClosed(): boolean {
    return this.host.isClosed()
  }

  protected head(): Expectation | undefined {
    return this.expectations[this.expectHead]
  }

  protected shift(): void {
    this.expectHead++
    if (this.maskingOn) this.headChanged()
    if (this.expectHead > 64 && this.expectHead * 2 > this.expectations.length) {
      this.expectations = this.expectations.slice(this.expectHead)
      this.expectHead = 0
    }
  }

  /** The first Execute queued after the head, before the batch's Sync. */
  protected nextExecute(): Expectation | undefined {
    for (let i = this.expectHead + 1; i < this.expectations.length; i++) {
      const e = this.expectations[i]
      if (!e || e.kind === Expect.Sync) return undefined
      if (e.kind === Expect.Execute) return e
    }
    return undefined
  }

  protected expect(
    kind: Expect,
    entry: NamedEntry | null,
    record: StatementRecord | null,
    target: NamedEntry | null = null,
    close?: Expectation['close'],
  ): void {
    if (kind === Expect.Query || kind === Expect.Sync) this.readiesPending++
    this.expectations.push(close ? { kind, entry, record, target, close } : { kind, entry, record, target })
    if (record?.masks && this.expectations.length - 1 === this.expectHead) this.headChanged()
  }

  /**
   * Queues a message for the server. One that directly follows the last one queued in the same
   * memory (the next message of the same read) extends it: a batch that arrived in one read goes
   * out in one write — the same bytes, in the same order — not one write per message.
   */
  protected queueForServer(b: Buffer): void {
    const last = this.out.length - 1
    const prev = this.out[last]
    if (prev !== undefined && prev.buffer === b.buffer && prev.byteOffset + prev.length === b.byteOffset)
      this.out[last] = Buffer.from(prev.buffer, prev.byteOffset, prev.length + b.length)
    else this.out.push(b)
  }

  protected flushToServer(): void {
    const up = this.upstream
    if (this.out.length === 0) return
    const out = this.out
    this.out = []
    let ok: boolean
    if (out.length === 1) ok = up.socket.write(out[0] as Buffer)
    else {
      up.socket.cork()
      for (const b of out) ok = up.socket.write(b)
      ok = up.socket.write(Buffer.alloc(0))
      up.socket.uncork()
    }
    if (!ok) this.client.pause()
  }

  /**
   * A ParameterStatus from the server: the ground truth of how it reads SQL. If it no longer reads
   * text the way the gateway's parser does, nothing more may be judged, so the session ends.
   * Returns false (and has ended the session) in that case.
   */
  protected lexingHolds(body: Buffer): boolean {
    const end = body.indexOf(0)
    const name = body.toString('utf8', 0, end).toLowerCase()
    const value = body.toString('utf8', end + 1, body.indexOf(0, end + 1))
    const pinned = PINNED_LEXING.get(name)
    if (pinned === undefined || value.toUpperCase() === pinned) return true
    this.log.warn({ session: this.session.id, setting: name, value }, 'the server reads SQL differently now; session ended')
    this.fatal(
      '08P01',
      `gatehouse: the server reports ${name} = ${value}; Gatehouse reads SQL with ${name} = ${pinned.toLowerCase() === 'on' ? 'on' : pinned} only, so the session was ended`,
    )
    return false
  }

  /**
   * Whether a text may be sent now. After a statement that could have changed a setting (a write's
   * trigger, a user function's set_config), the server tells the new value only in ParameterStatus
   * before ReadyForQuery; a text whose lexing depends on those settings waits for that answer. In an
   * unfinished extended-protocol batch the answer cannot come before Sync: such a text is refused.
   * Returns null when it may go now, a promise when it may go after the wait, 'refuse' otherwise.
   */
  protected lexicalGate(text: string): Promise<void> | null | 'refuse' {
    if (!this.lexicalUnsettled || !lexicallySensitive(text)) return null
    if (this.openBatchOpaque) return 'refuse'
    this.flushToServer()
    if (this.readiesPending === 0) return null
    return new Promise<void>((r) => this.readyWaiters.push(r))
  }

  protected noteForwarded(kind: Expect, inert: boolean): void {
    if (inert) return
    this.lexicalUnsettled = true
    if (kind === Expect.Execute) this.openBatchOpaque = true
  }
}
