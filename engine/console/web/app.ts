// The console's script (served as /console/assets/app.js, with the modules it imports beside it): it
// routes the page's hash to a view. Every view reads and acts through the gateway's JSON API with the
// console session's cookie; state-changing calls carry the page's CSRF token. Untrusted text
// (statements, names, comments) only ever goes into textContent.

/// <reference lib="dom" />

import { ApiError, whoami } from './api.js'
import { approvalsView } from './approvals.js'
import { auditView } from './audit.js'
import { h, main, setView, stopRepeating } from './dom.js'
import { policyView } from './policy.js'
import { replayView } from './replay.js'
import { sessionsView } from './sessions.js'

async function route(): Promise<void> {
  stopRepeating()
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
  await whoami()
  window.addEventListener('hashchange', () => void route())
  await route()
}

void start()
