// The console's Approvals view: pending and decided approvals with their delegation chains (and each
// delegated token's scope, for admins), voting with a comment, and asking for access ahead of time.

/// <reference lib="dom" />

import { api, isAdmin, type Json, me } from './api.js'
import { badge, chainList, facts, h, repeat, setView, status, time } from './dom.js'

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

export async function approvalsView(): Promise<void> {
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
  repeat(() => void refresh().catch(() => undefined), 2000)
}
