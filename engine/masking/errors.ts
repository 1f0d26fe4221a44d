// The masking engine's one error: a row or COPY line it cannot parse. It is a server-side
// (upstream) problem: the proxy ends the result rather than forward a row it could not mask.

import { GatehouseError } from '../errors.js'

export class MaskingError extends GatehouseError {
  constructor(message: string) {
    super('GH_ERR_UPSTREAM', `masking: ${message}`, { publicMessage: 'the server sent a result row the gateway could not mask' })
    this.name = 'MaskingError'
  }
}
