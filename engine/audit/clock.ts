// The audit log's timestamps, taken twice per statement on the hot path.

let isoSecond = -1
let isoPrefix = ''

/** `new Date().toISOString()`, with the part up to the second formatted once per second (V8
 * formats a Date through snprintf). */
export function isoNow(ms = Date.now()): string {
  const sec = Math.floor(ms / 1000)
  if (sec !== isoSecond) {
    const full = new Date(sec * 1000).toISOString()
    // `YYYY-MM-DDTHH:MM:SS.` (years past 9999 keep the slow path's format by falling back to it)
    if (full.length !== 24) return new Date(ms).toISOString()
    isoPrefix = full.slice(0, 20)
    isoSecond = sec
  }
  const m = ms - sec * 1000
  return `${isoPrefix}${m < 10 ? '00' : m < 100 ? '0' : ''}${m}Z`
}
