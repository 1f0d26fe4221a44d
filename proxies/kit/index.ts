// The kit: everything a protocol plugin may use beyond the contract (`proxies/types.ts`). A plugin
// imports the engine only through this module (`gatehouse/proxies/kit`), so the engine's inside can
// move without breaking plugins, and `npm run check` refuses any other path into the engine.
//
// What is here is what more than one protocol needs: the error type that carries a stable
// `GH_ERR_*` code and the message a client may see; the value side of masking (strategies, detectors,
// the masking key, column patterns, JSON paths and the streaming JSON masker); waiting for an approval of a held command; the hop-by-hop headers and TLS sniffing of the HTTP-speaking plugins; and how a refusal
// by policy reads (`gatehouse: denied by <rule> (<hop>): <reason>`).

export { GatehouseError, type GatehouseErrorCode, isGatehouseError } from '../../engine/errors.js'
export type { MaskObligation } from '../../engine/types.js'
export { MaskingError } from '../../engine/masking/errors.js'
export {
  type ColumnAction,
  type ColumnPlan,
  compileOp,
  type MaskingKeys,
  Op,
  ValueMasker,
  type ValueOp,
} from '../../engine/masking/values.js'
export { DETECTOR_NAMES, detect } from '../../engine/masking/detectors.js'
export { loadMaskingKey } from '../../engine/masking/keys.js'
export { columnMatches } from '../../engine/masking/patterns.js'
export {
  JsonMaskError,
  type JsonMaskedPath,
  JsonMasker,
  type JsonMaskOptions,
  JsonMaskPlan,
  type JsonMaskTarget,
  jsonMaskPlan,
  jsonMaskStream,
  maskJson,
} from '../../engine/masking/json-stream.js'
export { JsonPathError, parseJsonPath } from '../../engine/masking/jsonpath.js'
export { TextDetectorMasker, TextMaskError } from '../../engine/masking/text-stream.js'
export { isRecord } from '../../engine/record.js'
export { awaitApproval, type HeldVerdict } from './approval.js'
export { RUNNERS, runsOtherCommands, VERSIONED_RUNNER } from './commands.js'
export { connectionTokens, HOP_BY_HOP_HEADERS, isLoopback, type SniffOptions, sniffTls } from './http.js'
export { type Denial, denialOf, refusalMessage } from './refusal.js'
