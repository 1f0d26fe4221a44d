// Best-effort detection of the command lines a caller types into an interactive shell, from the
// PTY input stream. It emulates a readline-like line editor (typing, backspace, Ctrl-U/W/K, cursor
// movement, Ctrl-C) and reports a line when Enter is pressed. It cannot be exact and says so:
// history recall (arrows, Ctrl-R), tab completion, aliases, vi mode and full-screen programs change
// what the shell runs in ways the input does not show; such lines are flagged `uncertain`.
//
// This is a record, not a guardrail: the shell has already run the line when it is reported, and
// nothing here decides anything. Policy that must judge every command allows only `ssh.exec`.
//
// Input that the remote side did not echo (a password typed at a sudo prompt) is never reported:
// a line counts only once the output shows it — a small one-line terminal emulator follows the
// remote side's echo (backspaces, cursor moves, erase), and a typed line is reported when a printed
// line contains it. Lines whose echo does not appear within ECHO_WAIT_MS are dropped.

/** Longest line kept; longer lines are reported cut, flagged `truncated`. */
export const MAX_LINE = 4096
/** How long a typed line waits for its echo. */
export const ECHO_WAIT_MS = 2000
/** Typed lines waiting for their echo at once; older ones are dropped. */
const MAX_PENDING = 16

export interface DetectedCommand {
  readonly line: string
  /** History recall, completion or an unknown key touched the line: it may not be what ran. */
  readonly uncertain: boolean
  readonly truncated: boolean
}

const ESC = 0x1b

export class ShellCommandDetector {
  private line: string[] = []
  private cursor = 0
  private uncertain = false
  private truncated = false
  /** Typed lines waiting for their echo. */
  private pending: { line: string; uncertain: boolean; truncated: boolean; at: number }[] = []
  /** The output line being drawn, and the output's escape-sequence state. */
  private screen: string[] = []
  private col = 0
  private oesc = 0
  private ocsi = ''
  /** Escape sequence state: 0 none, 1 after ESC, 2 in CSI, 3 after ESC O. */
  private esc = 0
  private csi = ''
  private pasting = false

  constructor(private readonly onCommand: (c: DetectedCommand) => void) {}

  /** What the remote side printed (the shell's echo), ANSI sequences included. */
  output(data: Buffer): void {
    if (this.pending.length === 0) {
      // Nothing waits for an echo: only keep the cursor column roughly right.
      const t = data.toString('latin1')
      const nl = Math.max(t.lastIndexOf('\n'), t.lastIndexOf('\r'))
      if (nl >= 0) {
        this.screen = []
        this.col = 0
        this.oesc = 0
      }
      for (const ch of nl >= 0 ? t.slice(nl + 1) : t) this.draw(ch)
      return
    }
    for (const ch of data.toString('utf8')) this.draw(ch)
  }

  /** One output character on the emulated line. */
  private draw(ch: string): void {
    const c = ch.charCodeAt(0)
    if (this.oesc === 1) {
      this.oesc = ch === '[' ? 2 : 0
      this.ocsi = ''
      return
    }
    if (this.oesc === 2) {
      if (c >= 0x40 && c <= 0x7e) {
        this.oesc = 0
        const n = Math.max(1, Number.parseInt(this.ocsi, 10) || 1)
        if (ch === 'K') this.screen.length = Math.min(this.screen.length, this.col)
        else if (ch === 'C') this.col += n
        else if (ch === 'D') this.col = Math.max(0, this.col - n)
        else if (ch === 'P') this.screen.splice(this.col, n)
        else if (ch === '@') this.screen.splice(this.col, 0, ...' '.repeat(Math.min(n, 256)))
      } else if (this.ocsi.length < 16) this.ocsi += ch
      return
    }
    if (c === ESC) this.oesc = 1
    else if (ch === '\r') this.col = 0
    else if (ch === '\n') this.lineShown()
    else if (c === 0x08) this.col = Math.max(0, this.col - 1)
    else if (c >= 0x20 && c !== 0x7f && this.col < MAX_LINE * 2) {
      while (this.screen.length < this.col) this.screen.push(' ')
      this.screen[this.col++] = ch
    }
  }

  /** A printed line is complete: report the typed lines it shows; drop those waited for too long. */
  private lineShown(): void {
    const text = this.screen.join('')
    this.screen = []
    this.col = 0
    const now = Date.now()
    const keep: typeof this.pending = []
    for (const p of this.pending) {
      if (text.includes(p.line)) this.onCommand({ line: p.line, uncertain: p.uncertain, truncated: p.truncated })
      else if (now - p.at < ECHO_WAIT_MS) keep.push(p)
    }
    this.pending = keep
  }

  /** What the caller typed. */
  input(data: Buffer): void {
    for (const ch of data.toString('utf8')) this.key(ch)
  }

  private insert(ch: string): void {
    if (this.line.length >= MAX_LINE) {
      this.truncated = true
      return
    }
    this.line.splice(this.cursor, 0, ch)
    this.cursor++
  }

  private reset(): void {
    this.line = []
    this.cursor = 0
    this.uncertain = false
    this.truncated = false
  }

  private enter(): void {
    const text = this.line.join('')
    const trimmed = text.trim()
    if (trimmed !== '') {
      if (this.pending.length >= MAX_PENDING) this.pending.shift()
      this.pending.push({ line: trimmed, uncertain: this.uncertain, truncated: this.truncated, at: Date.now() })
    }
    this.reset()
  }

  private escape(ch: string): void {
    const c = ch.charCodeAt(0)
    if (this.esc === 1) {
      if (ch === '[') {
        this.esc = 2
        this.csi = ''
      } else if (ch === 'O') this.esc = 3
      else {
        // Meta-key editing (Alt-b, Alt-d, …): the line may have changed in ways not tracked.
        this.esc = 0
        this.uncertain = true
      }
      return
    }
    if (this.esc === 3) {
      this.esc = 0
      this.arrow(ch)
      return
    }
    // CSI: parameters until a final byte in @..~.
    if (c >= 0x40 && c <= 0x7e) {
      this.esc = 0
      const seq = this.csi + ch
      if (seq === '200~') this.pasting = true
      else if (seq === '201~') this.pasting = false
      else if (seq === '3~') this.line.splice(this.cursor, 1)
      else if (seq === 'H' || seq === '1~') this.cursor = 0
      else if (seq === 'F' || seq === '4~') this.cursor = this.line.length
      else if (seq.length === 1) this.arrow(ch)
      else this.uncertain = true
    } else if (this.csi.length < 16) this.csi += ch
  }

  private arrow(ch: string): void {
    if (ch === 'C') this.cursor = Math.min(this.line.length, this.cursor + 1)
    else if (ch === 'D') this.cursor = Math.max(0, this.cursor - 1)
    else if (ch === 'H') this.cursor = 0
    else if (ch === 'F') this.cursor = this.line.length
    // Up/Down: history recall; anything else unknown.
    else this.uncertain = true
  }

  private key(ch: string): void {
    if (this.esc !== 0) {
      this.escape(ch)
      return
    }
    const c = ch.charCodeAt(0)
    if (c === ESC) {
      this.esc = 1
      return
    }
    if (ch === '\r' || ch === '\n') {
      this.enter()
      return
    }
    if (this.pasting || c >= 0x20) {
      if (c === 0x7f && !this.pasting) this.backspace()
      else if (c >= 0x20 || ch === '\t') this.insert(ch)
      return
    }
    switch (c) {
      case 0x08: // Ctrl-H
        this.backspace()
        break
      case 0x15: // Ctrl-U: kill to the start
        this.line.splice(0, this.cursor)
        this.cursor = 0
        break
      case 0x0b: // Ctrl-K: kill to the end
        this.line.splice(this.cursor)
        break
      case 0x17: {
        // Ctrl-W: the word before the cursor
        let i = this.cursor
        while (i > 0 && this.line[i - 1] === ' ') i--
        while (i > 0 && this.line[i - 1] !== ' ') i--
        this.line.splice(i, this.cursor - i)
        this.cursor = i
        break
      }
      case 0x01: // Ctrl-A
        this.cursor = 0
        break
      case 0x05: // Ctrl-E
        this.cursor = this.line.length
        break
      case 0x02: // Ctrl-B
        this.cursor = Math.max(0, this.cursor - 1)
        break
      case 0x06: // Ctrl-F
        this.cursor = Math.min(this.line.length, this.cursor + 1)
        break
      case 0x03: // Ctrl-C: the line is abandoned
      case 0x04: // Ctrl-D on a line: nothing runs
        if (c === 0x03 || this.line.length === 0) this.reset()
        break
      case 0x0c: // Ctrl-L: redraw
        break
      default:
        // Tab completion, Ctrl-R search, Ctrl-Y yank, Ctrl-P/N history …
        this.uncertain = true
    }
  }

  private backspace(): void {
    if (this.cursor === 0) return
    this.line.splice(this.cursor - 1, 1)
    this.cursor--
  }
}
