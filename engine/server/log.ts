// The operational log (pino), with redaction configured once by path. The audit stream is not a
// log: it lives in engine/audit/writer.ts. Nothing secret should reach a log call, and the redaction
// paths are the second line of defence if one ever does.

import { pino, type Logger } from 'pino'
import { createRequire } from 'node:module'
import type { PrettyOptions, PrettyStream } from 'pino-pretty'

/** pino-pretty, loaded only for a pretty log (JSON, the default off a terminal, does not need it). */
const prettyStream = (options: PrettyOptions): PrettyStream =>
  (createRequire(import.meta.url)('pino-pretty') as { build: (o: PrettyOptions) => PrettyStream }).build(options)

export const REDACT_PATHS = [
  'password',
  '*.password',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'secrets',
  '*.secrets',
  'credential',
  '*.credential',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
]

/** `json`: one JSON object a line, for collectors. `pretty`: a line a person reads on a terminal. */
export type LogFormat = 'json' | 'pretty'
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty']

/** Pretty when the log's own stream (standard error) is a terminal, JSON otherwise. */
export function defaultLogFormat(): LogFormat {
  return process.stderr.isTTY ? 'pretty' : 'json'
}

export function createLogger(level: string, format: LogFormat = 'json'): Logger {
  const options = { level, base: { svc: 'gatehouse' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }
  if (format === 'pretty') {
    // Redaction happens before the line reaches the formatter, as for JSON. Synchronous: a person
    // at a terminal should see the last line before a crash, and the volume is a person's.
    return pino(
      options,
      prettyStream({
        destination: 2,
        sync: true,
        colorize: process.stderr.isTTY === true,
        translateTime: 'SYS:HH:MM:ss.l',
        ignore: 'pid,hostname,svc',
      }),
    )
  }
  return pino(options, pino.destination({ fd: 2, sync: false }))
}
