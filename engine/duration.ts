// The one duration syntax of the configuration, the API and the CLI: a whole number and one unit,
// `30s`, `15m`, `8h`, `7d`. Anything else (`1.5h`, `1h30m`, `-1m`, a bare number) is null: the
// caller reports it with its key path or refuses the request.

/** Seconds in `text` (`<n>s|m|h|d`, surrounding blanks ignored), or null when it is not one. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim())
  if (!m) return null
  const unit = m[2] === 's' ? 1 : m[2] === 'm' ? 60 : m[2] === 'h' ? 3600 : 86400
  return Number(m[1]) * unit
}
