// What the identity routes share: the error body schema, the ISO time of a Unix time, and the
// answer to an IdentityError on the API's routes ({error, code}; /oauth/token answers per RFC 6749).

import type { FastifyReply } from 'fastify'
import { isIdentityError } from './errors.js'

export const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, code: { type: 'string' }, error_description: { type: 'string' } },
  required: ['error'],
} as const

export function iso(unix: number): string {
  return new Date(unix * 1000).toISOString()
}

/** An IdentityError as the API's {error, code} with its HTTP status; anything else is rethrown. */
export function apiError(reply: FastifyReply, err: unknown) {
  if (isIdentityError(err)) {
    const status = err.oauth === 'server_error' ? 503 : err.oauth === 'invalid_client' ? 401 : 400
    return reply.status(status).send({ error: err.publicMessage, code: err.code })
  }
  throw err
}
