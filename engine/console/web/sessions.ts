// The console's Sessions view (admins): the gateway's sessions, filtered by person, agent, connection,
// protocol, age and liveness, each linked to its replay, live ones with a Kill button.

/// <reference lib="dom" />

import { api, isAdmin } from './api.js'
import { badge, chainList, filterInput, h, setView, status, time } from './dom.js'

interface SessionRow {
  id: string
  connection: string
  protocol: string
  chain: string[]
  client: string
  started_at: string
  ended_at: string | null
  end_reason: string | null
  active: boolean
}

export async function sessionsView(): Promise<void> {
  if (!isAdmin()) {
    setView('Sessions', h('p', {}, 'Only members of gatehouse-admins can see sessions.'))
    return
  }
  const form = h(
    'form',
    { class: 'filters', role: 'search' },
    filterInput('f-person', 'Person'),
    filterInput('f-agent', 'Agent'),
    filterInput('f-connection', 'Connection'),
    filterInput('f-protocol', 'Protocol'),
    filterInput('f-since', 'Since', { placeholder: '1h or RFC 3339' }),
    h('div', {}, h('label', { for: 'f-active' }, 'Live only'), h('input', { id: 'f-active', name: 'f-active', type: 'checkbox' })),
    h('button', { type: 'submit' }, 'Filter'),
  ) as HTMLFormElement
  const table = h('div', { id: 'sessions-table' })
  const result = h('p', { class: 'status', 'aria-live': 'polite' })
  setView('Sessions', form, result, table)
  const render = async (): Promise<void> => {
    const f = new FormData(form)
    const v = (k: string) => String(f.get(k) ?? '').trim()
    const r = await api<{ sessions: SessionRow[] }>(`/v1/sessions${f.get('f-active') ? '?active=true' : ''}`)
    const since = v('f-since') ? sinceTime(v('f-since')) : null
    const rows = r.sessions
      .filter((s) => !v('f-person') || (s.chain[0] ?? '').includes(v('f-person')))
      .filter((s) => !v('f-agent') || s.chain.slice(1).some((p) => p.includes(v('f-agent'))))
      .filter((s) => !v('f-connection') || s.connection === v('f-connection'))
      .filter((s) => !v('f-protocol') || s.protocol === v('f-protocol'))
      .filter((s) => !since || s.started_at >= since)
      .reverse()
    table.replaceChildren(
      h(
        'table',
        {},
        h('caption', { class: 'scope' }, `${rows.length} sessions, newest first`),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...['Session', 'Chain', 'Connection', 'Protocol', 'Client', 'Started', 'Ended', ''].map((t) => h('th', { scope: 'col' }, t)),
          ),
        ),
        h(
          'tbody',
          {},
          ...rows.map((s) => {
            const kill = h('button', { type: 'button', class: 'kill', 'aria-label': `Kill session ${s.id}` }, 'Kill')
            kill.addEventListener('click', async () => {
              try {
                await api(`/v1/sessions/${encodeURIComponent(s.id)}/kill`, { method: 'POST', body: { reason: 'killed from the console' } })
                status(result, `Session ${s.id} killed`, true)
                await render()
              } catch (err) {
                status(result, (err as Error).message, false)
              }
            })
            return h(
              'tr',
              { 'data-session': s.id },
              h('td', {}, h('a', { href: `#replay/${s.id}` }, s.id)),
              h('td', {}, chainList(s.chain)),
              h('td', {}, s.connection),
              h('td', {}, s.protocol),
              h('td', {}, s.client),
              h('td', {}, time(s.started_at)),
              h('td', {}, s.active ? badge('live') : `${time(s.ended_at)}${s.end_reason ? ` (${s.end_reason})` : ''}`),
              h('td', {}, s.active ? kill : null),
            )
          }),
        ),
      ),
    )
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    void render().catch((err: Error) => status(result, err.message, false))
  })
  await render()
}

function sinceTime(text: string): string | null {
  const m = /^(\d+)(s|m|h|d)$/.exec(text)
  if (m) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd']
    return new Date(Date.now() - Number(m[1]) * unit * 1000).toISOString()
  }
  const t = Date.parse(text)
  return Number.isNaN(t) ? null : new Date(t).toISOString()
}
