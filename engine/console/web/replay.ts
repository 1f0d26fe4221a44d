// The console's Replay view: a terminal session in the asciinema player with a list of its commands to
// seek to, or a database/HTTP/MCP session's recorded timeline of statements, decisions and masking.

/// <reference lib="dom" />

import type { Json } from './api.js'
import { summary } from './audit.js'
import { badge, chainList, facts, h, setView, time } from './dom.js'

interface PlayerApi {
  create(src: { data: string }, el: HTMLElement, opts: Json): unknown
}

function loadPlayer(): Promise<PlayerApi> {
  const w = window as unknown as { AsciinemaPlayer?: PlayerApi }
  if (w.AsciinemaPlayer) return Promise.resolve(w.AsciinemaPlayer)
  return new Promise((resolve, reject) => {
    document.head.append(h('link', { rel: 'stylesheet', href: '/console/assets/asciinema-player.css' }))
    const s = h('script', { src: '/console/assets/asciinema-player.min.js' })
    s.addEventListener('load', () => (w.AsciinemaPlayer ? resolve(w.AsciinemaPlayer) : reject(new Error('the player did not load'))))
    s.addEventListener('error', () => reject(new Error('the player did not load')))
    document.head.append(s)
  })
}

export async function replayView(id: string): Promise<void> {
  const res = await fetch(`/v1/sessions/${encodeURIComponent(id)}/recording`, { credentials: 'same-origin' })
  if (res.status === 401) return location.assign('/')
  const text = await res.text()
  if (!res.ok) {
    let msg = text
    try {
      msg = String((JSON.parse(text) as Json).error)
    } catch {
      // keep the text
    }
    setView(`Replay ${id}`, h('p', { class: 'error', role: 'alert' }, msg))
    return
  }
  const kind = res.headers.get('x-gatehouse-recording')
  const auditLink = h('a', { href: `#audit/session=${encodeURIComponent(id)}` }, 'audit events of this session')
  if (kind === 'terminal') {
    // Markers are in the recording itself ("m" events at each detected command).
    const markers: [number, string][] = []
    for (const l of text.split('\n').slice(1)) {
      if (!l.includes('"m"')) continue
      try {
        const e = JSON.parse(l) as [number, string, string]
        if (e[1] === 'm') markers.push([e[0], e[2]])
      } catch {
        // a torn line: the player skips it too
      }
    }
    const box = h('div', { class: 'player', id: 'player' })
    let seek: (i: number) => void = () => undefined
    const list = h(
      'ol',
      { class: 'markers' },
      ...markers.map(([t, c], i) => {
        const b = h('button', { type: 'button', class: 'secondary' }, `Play from ${t.toFixed(1)}s`)
        b.addEventListener('click', () => seek(i))
        return h('li', {}, b, ' ', h('code', {}, c))
      }),
    )
    setView(`Replay ${id}`, h('p', {}, 'Terminal recording. ', auditLink), box, h('h2', {}, 'Commands'), list)
    const player = (await loadPlayer()).create({ data: text }, box, { speed: 1, idleTimeLimit: 2, fit: 'width', controls: true }) as {
      seek(to: unknown): Promise<void>
      play(): Promise<void>
    }
    seek = (i) => void player.seek({ marker: i })
    return
  }
  const lines = text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Json)
  const head = lines[0] ?? {}
  const rows = lines.slice(1).filter((e) => e.type === 'statement' || e.type === 'result' || String(e.type).includes('.'))
  setView(
    `Replay ${id}`,
    facts([
      ['Connection', String(head.connection ?? '')],
      ['Protocol', String(head.protocol ?? '')],
      ['Chain', chainList(Array.isArray(head.chain) ? (head.chain as string[]) : [])],
      ['Started', time(String(head.started ?? ''))],
    ]),
    h('p', {}, auditLink),
    h(
      'table',
      { class: 'timeline' },
      h(
        'thead',
        {},
        h('tr', {}, ...['At', 'Type', 'Decision', 'Statement', 'Masked', 'Duration'].map((t) => h('th', { scope: 'col' }, t))),
      ),
      h(
        'tbody',
        {},
        ...rows.map((e) =>
          h(
            'tr',
            {},
            h('td', {}, `${Number(e.t ?? 0).toFixed(3)}s`),
            h('td', {}, String(e.type)),
            h('td', {}, typeof e.decision === 'string' ? badge(e.decision) : ''),
            h('td', {}, h('code', {}, summary(e))),
            h(
              'td',
              {},
              Array.isArray(e.masked)
                ? (e.masked as { column?: string; strategy?: string; rule?: string }[])
                    .map((m) => `${m.column ?? '?'}: ${m.strategy ?? ''}${m.rule ? ` (${m.rule})` : ''}`)
                    .join(', ')
                : '',
            ),
            h('td', {}, typeof e.duration_ms === 'number' ? `${e.duration_ms.toFixed(1)} ms` : ''),
          ),
        ),
      ),
    ),
  )
}
