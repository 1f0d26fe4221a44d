// The console's Policy view (admins): the loaded bundle's version, source, load time, last reload
// error and its files, read-only.

/// <reference lib="dom" />

import { api, isAdmin } from './api.js'
import { facts, h, setView, time } from './dom.js'

export async function policyView(): Promise<void> {
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
