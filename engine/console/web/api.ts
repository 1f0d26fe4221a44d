// The console's client for the gateway's JSON API: every call carries the console session's cookie,
// state-changing calls carry the page's CSRF token; a 401 sends the page back to the login. Also the
// signed-in identity (`whoami`), which the views read to decide what they may show.

/// <reference lib="dom" />

export type Json = Record<string, unknown>

export interface Me {
  principal: string
  groups: string[]
  chain: { id: string }[]
}

const csrf = document.querySelector<HTMLMetaElement>('meta[name="gatehouse-csrf"]')?.content ?? ''
export let me: Me | null = null

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
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

export function isAdmin(): boolean {
  return me?.groups.includes('gatehouse-admins') === true && me.chain.length === 1
}

export async function whoami(): Promise<void> {
  me = await api<Me>('/v1/whoami')
}
