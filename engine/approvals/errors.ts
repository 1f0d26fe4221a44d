// Errors of the approvals service with stable codes; `status` is the HTTP status the API answers.
// Their messages are written for the reviewer or requester and carry no secrets.

export type ApprovalErrorCode =
  | 'GH_ERR_APPROVAL_NOT_FOUND'
  | 'GH_ERR_APPROVAL_CLOSED'
  | 'GH_ERR_APPROVAL_FORBIDDEN'
  | 'GH_ERR_APPROVAL_DUPLICATE'
  | 'GH_ERR_APPROVAL_REQUEST'

const STATUS: Record<ApprovalErrorCode, number> = {
  GH_ERR_APPROVAL_NOT_FOUND: 404,
  GH_ERR_APPROVAL_CLOSED: 409,
  GH_ERR_APPROVAL_FORBIDDEN: 403,
  GH_ERR_APPROVAL_DUPLICATE: 409,
  GH_ERR_APPROVAL_REQUEST: 400,
}

export class ApprovalError extends Error {
  override readonly name = 'ApprovalError'
  readonly status: number
  constructor(
    readonly code: ApprovalErrorCode,
    message: string,
  ) {
    super(message)
    this.status = STATUS[code]
  }
}

export function isApprovalError(err: unknown): err is ApprovalError {
  return err instanceof ApprovalError
}
