// The console's DOM helpers: building elements (text only ever goes in as text nodes), the small
// pieces every view shows (times, badges, delegation chains, fact lists, status lines), replacing the
// main view, and the current view's polling timer.

/// <reference lib="dom" />

export const main = document.getElementById('main') as HTMLElement
let poll: number | undefined

export type Child = Node | string | null | undefined | false
export function h(tag: string, attrs: Record<string, string | undefined> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) el.setAttribute(k, v)
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c)
  return el
}

export function time(iso: string | null | undefined): string {
  if (!iso) return '—'
  const d = new Date(iso)
  return Number.isNaN(d.getTime())
    ? iso
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
}

export function badge(text: string): HTMLElement {
  return h('span', { class: `badge ${text}` }, text)
}

export function chainList(chain: readonly string[], scopes: ReadonlyMap<string, string[]> = new Map(), tokenIds: readonly string[] = []) {
  return h(
    'ol',
    { class: 'chain', 'aria-label': 'delegation chain' },
    ...chain.map((p, i) => {
      const scope = scopes.get(tokenIds[i] ?? '')
      return h('li', {}, p, scope && scope.length > 0 ? h('span', { class: 'scope' }, ` scope: ${scope.join(' ')}`) : null)
    }),
  )
}

export function facts(rows: [string, Child][]): HTMLElement {
  return h('dl', { class: 'facts' }, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]))
}

export function status(el: HTMLElement, text: string, ok: boolean): void {
  el.textContent = text
  el.className = ok ? 'status ok' : 'status error'
  el.setAttribute('role', ok ? 'status' : 'alert')
}

export function setView(title: string, ...content: Child[]): void {
  document.title = `${title} · Gatehouse`
  main.replaceChildren(h('h1', {}, title), ...content.filter((c): c is Node | string => c !== null && c !== undefined && c !== false))
  for (const a of document.querySelectorAll<HTMLAnchorElement>('header nav a')) {
    if (a.hash === `#${location.hash.slice(1).split('/')[0]}`) a.setAttribute('aria-current', 'page')
    else a.removeAttribute('aria-current')
  }
}

export function filterInput(id: string, label: string, attrs: Record<string, string> = {}): HTMLElement {
  return h('div', {}, h('label', { for: id }, label), h('input', { id, name: id, ...attrs }))
}

/** Runs fn every ms milliseconds until the next route change. */
export function repeat(fn: () => void, ms: number): void {
  poll = window.setInterval(fn, ms)
}

export function stopRepeating(): void {
  if (poll !== undefined) window.clearInterval(poll)
  poll = undefined
}
