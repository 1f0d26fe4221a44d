// The console's Audit view (admins): the log's integrity check and last checkpoint, a search over the
// audit API with JSON Lines export, and the one-line summary of an event the replay view also uses.

/// <reference lib="dom" />

import { api, isAdmin, type Json } from './api.js'
import { badge, chainList, facts, filterInput, h, setView, status, time } from './dom.js'

const AUDIT_FIELDS: [string, string, string][] = [
  ['principal', 'Person or agent', 'user:alice'],
  ['token', 'Token (and its delegates)', 'token id'],
  ['connection', 'Connection', ''],
  ['type', 'Action (event type)', 'statement'],
  ['text', 'Statement text', ''],
  ['since', 'Since', '1h or RFC 3339'],
  ['until', 'Until', ''],
]

/** One line for an event: the SQL, the command line, the HTTP request or the MCP tool call. */
export function summary(e: Json): string {
  if (typeof e.method === 'string' && typeof e.path === 'string') return `${e.method} ${e.path}`
  if (typeof e.tool === 'string') return `${e.tool} ${e.arguments === undefined ? '' : JSON.stringify(e.arguments)}`.trim()
  for (const k of ['sql', 'command', 'reason', 'method']) if (typeof e[k] === 'string') return String(e[k])
  const err = e.error as { code?: string; message?: string } | undefined
  if (err?.message) return `error ${err.code ?? ''}: ${err.message}`
  if (typeof e.tag === 'string') return `${e.tag}${typeof e.rows === 'number' ? ` (${e.rows} rows)` : ''}`
  const t = e.token as { id?: string } | undefined
  if (t?.id) return `token ${t.id}`
  return ''
}

export async function auditView(): Promise<void> {
  if (!isAdmin()) {
    setView('Audit', h('p', {}, 'Only members of gatehouse-admins can search the audit log.'))
    return
  }
  const decision = h(
    'select',
    { id: 'a-decision', name: 'decision' },
    h('option', { value: '' }, 'any'),
    h('option', { value: 'allow' }, 'allow'),
    h('option', { value: 'deny' }, 'deny'),
    h('option', { value: 'hold' }, 'hold'),
  )
  const form = h(
    'form',
    { class: 'filters', role: 'search' },
    ...AUDIT_FIELDS.map(([k, label, ph]) => filterInput(`a-${k}`, label, ph ? { placeholder: ph } : {})),
    h('div', {}, h('label', { for: 'a-decision' }, 'Decision'), decision),
    h('div', {}, h('label', { for: 'a-rule' }, 'Rule'), h('input', { id: 'a-rule', name: 'a-rule' })),
    h('button', { type: 'submit' }, 'Search'),
  ) as HTMLFormElement
  const integrity = h('section', { class: 'card', 'aria-labelledby': 'integrity-h' }, h('h2', { id: 'integrity-h' }, 'Integrity'))
  const results = h('div', { id: 'audit-results' })
  const result = h('p', { class: 'status', 'aria-live': 'polite' })
  setView('Audit', integrity, form, result, results)
  let last: Json[] = []
  const search = async (): Promise<void> => {
    const f = new FormData(form)
    const q = new URLSearchParams()
    for (const [k] of AUDIT_FIELDS) {
      const v = String(f.get(`a-${k}`) ?? '').trim()
      if (v) q.set(k, v)
    }
    if (f.get('decision')) q.set('decision', String(f.get('decision')))
    q.set('limit', '500')
    const rule = String(f.get('a-rule') ?? '').trim()
    const r = await api<{ events: Json[] }>(`/v1/audit?${q}`)
    last = rule ? r.events.filter((e) => JSON.stringify(e.rules ?? e.rule ?? '').includes(rule)) : r.events
    const exportLink = h('button', { type: 'button', class: 'secondary', id: 'export' }, 'Export as JSON Lines')
    exportLink.addEventListener('click', () => {
      const blob = new Blob(
        last.map((e) => `${JSON.stringify(e)}\n`),
        { type: 'application/x-ndjson' },
      )
      const a = h('a', { href: URL.createObjectURL(blob), download: 'gatehouse-audit.jsonl' }) as HTMLAnchorElement
      a.click()
      setTimeout(() => URL.revokeObjectURL(a.href), 1000)
    })
    results.replaceChildren(
      h('p', {}, `${last.length} events `, exportLink),
      h(
        'table',
        {},
        h(
          'thead',
          {},
          h('tr', {}, ...['Time', 'Type', 'Decision', 'Chain', 'Connection', 'Session', 'What'].map((t) => h('th', { scope: 'col' }, t))),
        ),
        h(
          'tbody',
          {},
          ...last
            .slice()
            .reverse()
            .map((e) =>
              h(
                'tr',
                {},
                h('td', {}, time(String(e.time))),
                h('td', {}, String(e.type)),
                h('td', {}, typeof e.decision === 'string' ? badge(e.decision) : ''),
                h('td', {}, chainList(Array.isArray(e.chain) ? (e.chain as string[]) : [])),
                h('td', {}, typeof e.connection === 'string' ? e.connection : ''),
                h('td', {}, typeof e.session === 'string' ? h('a', { href: `#replay/${e.session}` }, e.session) : ''),
                h('td', {}, h('code', {}, summary(e))),
              ),
            ),
        ),
      ),
    )
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    void search().catch((err: Error) => status(result, err.message, false))
  })
  const [verify, checkpoints] = await Promise.all([
    api<{ ok: boolean; events: number; problem: Json | null }>('/v1/audit/verify').catch((err: Error) => ({
      ok: false,
      events: 0,
      problem: { error: err.message },
    })),
    api<{ events: Json[] }>('/v1/audit?type=audit.checkpoint&limit=1').catch(() => ({ events: [] as Json[] })),
  ])
  const cp = checkpoints.events[0]
  integrity.append(
    facts([
      ['Verify', verify.ok ? h('span', { class: 'ok' }, `ok, ${verify.events} events`) : h('span', { class: 'error' }, 'FAILED')],
      ['Problem', verify.problem ? JSON.stringify(verify.problem) : 'none'],
      ['Last checkpoint', cp ? time(String(cp.time)) : 'none yet'],
    ]),
  )
  // A link from elsewhere in the console may carry a search in the hash: #audit/token=…
  const preset = new URLSearchParams(location.hash.split('/').slice(1).join('/'))
  for (const [k, v] of preset) {
    const el = form.querySelector<HTMLInputElement>(`#a-${k}`)
    if (el) el.value = v
  }
  await search()
}
