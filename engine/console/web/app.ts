// The console's script (served as /console/assets/app.js): every view reads and acts through the
// gateway's JSON API with the console session's cookie; state-changing calls carry the page's CSRF
// token. Untrusted text (statements, names, comments) only ever goes into textContent.

/// <reference lib="dom" />

type Json = Record<string, unknown>

interface Approval {
  id: string
  status: string
  kind: string
  requester: string
  chain: string[]
  token_ids: string[]
  connection: string
  connection_labels?: Record<string, string>
  session: string | null
  action: string
  statement: string
  rules: string[]
  requirements: { rule: string; group: string; count: number; reason: string }[]
  reason: string | null
  grant: string
  window_seconds: number | null
  created_at: string
  expires_at: string
  votes: { reviewer: string; verdict: string; comment: string | null; at: string }[]
}

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

interface Me {
  principal: string
  groups: string[]
  chain: { id: string }[]
}

const csrf = document.querySelector<HTMLMetaElement>('meta[name="gatehouse-csrf"]')?.content ?? ''
const main = document.getElementById('main') as HTMLElement
let me: Me | null = null
let poll: number | undefined

type Child = Node | string | null | undefined | false
function h(tag: string, attrs: Record<string, string | undefined> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) el.setAttribute(k, v)
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c)
  return el
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const method = init.method ?? 'GET'
  const headers: Record<string, string> = { accept: 'application/json' }
  if (method !== 'GET') headers['x-gatehouse-csrf'] = csrf
  if (init.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  })
  if (res.status === 401) {
    location.assign('/')
    throw new ApiError(401, 'signed out')
  }
  const text = await res.text()
  if (!res.ok) {
    let msg = text
    try {
      msg = String((JSON.parse(text) as Json).error ?? text)
    } catch {
      // not JSON: keep the text
    }
    throw new ApiError(res.status, msg)
  }
  return (text === '' ? null : JSON.parse(text)) as T
}

function isAdmin(): boolean {
  return me?.groups.includes('gatehouse-admins') === true && me.chain.length === 1
}

function time(iso: string | null | undefined): string {
  if (!iso) return '—'
  const d = new Date(iso)
  return Number.isNaN(d.getTime())
    ? iso
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
}

function badge(text: string): HTMLElement {
  return h('span', { class: `badge ${text}` }, text)
}

function chainList(chain: readonly string[], scopes: ReadonlyMap<string, string[]> = new Map(), tokenIds: readonly string[] = []) {
  return h(
    'ol',
    { class: 'chain', 'aria-label': 'delegation chain' },
    ...chain.map((p, i) => {
      const scope = scopes.get(tokenIds[i] ?? '')
      return h('li', {}, p, scope && scope.length > 0 ? h('span', { class: 'scope' }, ` scope: ${scope.join(' ')}`) : null)
    }),
  )
}

function facts(rows: [string, Child][]): HTMLElement {
  return h('dl', { class: 'facts' }, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]))
}

function status(el: HTMLElement, text: string, ok: boolean): void {
  el.textContent = text
  el.className = ok ? 'status ok' : 'status error'
  el.setAttribute('role', ok ? 'status' : 'alert')
}

function setView(title: string, ...content: Child[]): void {
  document.title = `${title} · Gatehouse`
  main.replaceChildren(h('h1', {}, title), ...content.filter((c): c is Node | string => c !== null && c !== undefined && c !== false))
  for (const a of document.querySelectorAll<HTMLAnchorElement>('header nav a')) {
    if (a.hash === `#${location.hash.slice(1).split('/')[0]}`) a.setAttribute('aria-current', 'page')
    else a.removeAttribute('aria-current')
  }
}

// Approvals ---------------------------------------------------------------------------------------

/** Each delegated token's scope, from the audit log's token.issued records (admins may read them). */
async function tokenScopes(ids: readonly string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>()
  if (!isAdmin() || ids.length === 0) return out
  try {
    const r = await api<{ events: Json[] }>('/v1/audit?type=token.issued&limit=500')
    for (const e of r.events) {
      const t = e.token as { id?: string; scope?: string[] } | undefined
      if (t?.id && ids.includes(t.id) && Array.isArray(t.scope)) out.set(t.id, t.scope)
    }
  } catch {
    // the chain is shown without scopes
  }
  return out
}

function approvalCard(a: Approval, scopes: Map<string, string[]>, refresh: () => void): HTMLElement {
  const comment = h('textarea', { id: `comment-${a.id}`, name: 'comment', maxlength: '2000' }) as HTMLTextAreaElement
  const result = h('p', { class: 'status', 'aria-live': 'polite' })
  const vote = (verdict: 'approve' | 'deny') => async () => {
    try {
      const r = await api<Approval>(`/v1/approvals/${a.id}/${verdict}`, { method: 'POST', body: { comment: comment.value || undefined } })
      status(result, `${verdict === 'approve' ? 'Approved' : 'Denied'}: ${r.status}`, true)
      setTimeout(refresh, 300)
    } catch (err) {
      status(result, (err as Error).message, false)
    }
  }
  const approve = h('button', { type: 'button', class: 'approve' }, 'Approve')
  const deny = h('button', { type: 'button', class: 'deny' }, 'Deny')
  approve.addEventListener('click', vote('approve'))
  deny.addEventListener('click', vote('deny'))
  const mine = me !== null && a.chain.includes(me.principal)
  return h(
    'article',
    { class: 'card approval', 'data-id': a.id, 'aria-labelledby': `title-${a.id}` },
    h('h3', { id: `title-${a.id}` }, `${a.id} · ${a.action} on ${a.connection} `, badge(a.status)),
    a.kind === 'statement' ? h('pre', { class: 'statement' }, a.statement) : null,
    chainList(a.chain, scopes, a.token_ids),
    facts([
      ['Requested by', a.requester],
      [
        'Connection',
        `${a.connection}${
          a.connection_labels && Object.keys(a.connection_labels).length > 0
            ? ` (${Object.entries(a.connection_labels)
                .map(([k, v]) => `${k}=${v}`)
                .join(', ')})`
            : ''
        }`,
      ],
      ['Session', a.session ? h('a', { href: `#replay/${a.session}` }, a.session) : '—'],
      ['Rules', a.rules.join(', ') || '—'],
      ['Needs', a.requirements.map((q) => `${q.count} of ${q.group}${q.reason ? ` (${q.reason})` : ''}`).join('; ') || '—'],
      ['Reason', a.reason ?? '—'],
      ['Grant', a.grant === 'window' ? `window of ${a.window_seconds ?? 0}s` : 'this statement once'],
      ['Created', time(a.created_at)],
      ['Expires', time(a.expires_at)],
      ['Votes', a.votes.map((v) => `${v.reviewer}: ${v.verdict}${v.comment ? ` (${v.comment})` : ''}`).join('; ') || 'none yet'],
    ]),
    a.status === 'pending'
      ? h(
          'div',
          { class: 'actions' },
          h('label', { for: `comment-${a.id}` }, 'Comment'),
          comment,
          approve,
          deny,
          mine ? h('span', { class: 'scope' }, 'You are in this chain: the gateway will refuse your vote.') : null,
        )
      : null,
    result,
  )
}

function accessRequestForm(): HTMLElement {
  const result = h('p', { class: 'status', 'aria-live': 'polite' })
  const form = h(
    'form',
    { class: 'card filters', id: 'access-request' },
    h('div', {}, h('label', { for: 'ar-connection' }, 'Connection'), h('input', { id: 'ar-connection', name: 'connection', required: '' })),
    h('div', {}, h('label', { for: 'ar-action' }, 'Action'), h('input', { id: 'ar-action', name: 'action', required: '', value: 'write' })),
    h('div', {}, h('label', { for: 'ar-for' }, 'For'), h('input', { id: 'ar-for', name: 'for', required: '', value: '30m', size: '6' })),
    h('div', {}, h('label', { for: 'ar-reason' }, 'Reason'), h('input', { id: 'ar-reason', name: 'reason' })),
    h('button', { type: 'submit' }, 'Request access'),
    result,
  ) as HTMLFormElement
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const f = new FormData(form)
    const body: Json = { connection: f.get('connection'), action: f.get('action'), for: f.get('for') }
    if (f.get('reason')) body.reason = f.get('reason')
    try {
      const r = await api<Approval>('/v1/approvals/requests', { method: 'POST', body })
      status(result, `Filed ${r.id} (${r.status})`, true)
    } catch (err) {
      status(result, (err as Error).message, false)
    }
  })
  return form
}

async function approvalsView(): Promise<void> {
  const pending = h('section', { 'aria-labelledby': 'pending-h' }, h('h2', { id: 'pending-h' }, 'Waiting for a decision'))
  const decided = h('section', { 'aria-labelledby': 'decided-h' }, h('h2', { id: 'decided-h' }, 'Decided'))
  setView('Approvals', pending, decided, h('h2', {}, 'Ask for access ahead of time'), accessRequestForm())
  let shown = ''
  const refresh = async (): Promise<void> => {
    const r = await api<{ approvals: Approval[] }>('/v1/approvals')
    // Re-render only on change, so a comment being typed is not wiped by the poll.
    const key = JSON.stringify(r.approvals.map((a) => [a.id, a.status, a.votes.length]))
    if (key === shown) return
    shown = key
    const scopes = await tokenScopes([...new Set(r.approvals.flatMap((a) => a.token_ids))])
    const open = r.approvals.filter((a) => a.status === 'pending')
    const done = r.approvals
      .filter((a) => a.status !== 'pending')
      .slice(-20)
      .reverse()
    pending.replaceChildren(
      h('h2', { id: 'pending-h' }, `Waiting for a decision (${open.length})`),
      ...(open.length ? open.map((a) => approvalCard(a, scopes, () => void refresh())) : [h('p', {}, 'Nothing is waiting.')]),
    )
    decided.replaceChildren(
      h('h2', { id: 'decided-h' }, 'Decided'),
      ...(done.length ? done.map((a) => approvalCard(a, scopes, () => void refresh())) : [h('p', {}, 'None yet.')]),
    )
  }
  await refresh()
  poll = window.setInterval(() => void refresh().catch(() => undefined), 2000)
}

// Sessions ----------------------------------------------------------------------------------------

function filterInput(id: string, label: string, attrs: Record<string, string> = {}): HTMLElement {
  return h('div', {}, h('label', { for: id }, label), h('input', { id, name: id, ...attrs }))
}

async function sessionsView(): Promise<void> {
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

// Audit -------------------------------------------------------------------------------------------

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
function summary(e: Json): string {
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

async function auditView(): Promise<void> {
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

// Policy ------------------------------------------------------------------------------------------

async function policyView(): Promise<void> {
  if (!isAdmin()) {
    setView('Policy', h('p', {}, 'Only members of gatehouse-admins can read the policy.'))
    return
  }
  const p = await api<{ version: string; loaded_at: string | null; last_error: string | null; source: string | null }>('/v1/policy')
  const files = await api<{ files: { path: string; text: string | null; bytes: number }[] }>('/v1/policy/files').catch(() => ({
    files: [],
  }))
  setView(
    'Policy',
    h(
      'section',
      { class: 'card' },
      facts([
        ['Version', h('code', {}, p.version)],
        ['Source', p.source ?? 'the default bundle'],
        ['Loaded', time(p.loaded_at)],
        ['Last reload error', p.last_error ? h('span', { class: 'error' }, p.last_error) : 'none'],
      ]),
    ),
    h('h2', {}, `Files (${files.files.length}, read-only)`),
    ...files.files.map((f) =>
      h(
        'details',
        { class: 'card' },
        h('summary', {}, `${f.path} (${f.bytes} bytes)`),
        h('pre', { class: 'statement' }, f.text ?? '(binary)'),
      ),
    ),
  )
}

// Replay ------------------------------------------------------------------------------------------

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

async function replayView(id: string): Promise<void> {
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

// Routing -----------------------------------------------------------------------------------------

async function route(): Promise<void> {
  if (poll !== undefined) window.clearInterval(poll)
  poll = undefined
  const [view = 'approvals', ...rest] = location.hash.slice(1).split('/')
  try {
    if (view === 'sessions') await sessionsView()
    else if (view === 'audit') await auditView()
    else if (view === 'policy') await policyView()
    else if (view === 'replay' && rest[0]) await replayView(decodeURIComponent(rest[0]))
    else await approvalsView()
    main.focus()
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return
    setView('Error', h('p', { class: 'error', role: 'alert' }, (err as Error).message))
  }
}

async function start(): Promise<void> {
  me = await api<Me>('/v1/whoami')
  window.addEventListener('hashchange', () => void route())
  await route()
}

void start()
