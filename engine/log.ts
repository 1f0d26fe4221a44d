// The operational log (pino), with redaction configured once by path. The audit stream is not a
// log: it lives in engine/audit.ts. Nothing secret should reach a log call, and the redaction
// paths are the second line of defence if one ever does.

import { pino, type Logger } from 'pino'

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

export function createLogger(level: string): Logger {
  return pino(
    { level, base: { svc: 'gatehouse' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    pino.destination({ fd: 2, sync: false }),
  )
}
