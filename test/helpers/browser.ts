// A real browser for the console tests: Debian's Chromium (apt package `chromium`, no browser
// download) driven by playwright-core, headless, with the background services that would reach for
// the network switched off. Screenshots go to dist/test/console-screenshots/; axe-core checks a page
// for accessibility problems.

import { mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { type Browser, chromium, type Page } from 'playwright-core'
import { REPO } from './gateway.js'

export const CHROMIUM = '/usr/bin/chromium'
export const SCREENSHOTS = join(REPO, 'dist', 'test', 'console-screenshots')

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 120_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true })
  const path = join(SCREENSHOTS, `${name}.png`)
  await page.screenshot({ path, fullPage: true })
  return path
}

export interface AxeViolation {
  readonly id: string
  readonly impact: string | null
  readonly help: string
  readonly nodes: readonly { readonly target: readonly string[]; readonly html: string }[]
}

let axeSource: string | null = null

/**
 * axe-core's violations on the page as it is now. The script is evaluated through the DevTools
 * protocol, which the page's Content-Security-Policy does not govern (a script tag would be refused).
 */
export async function axeViolations(page: Page): Promise<AxeViolation[]> {
  axeSource ??= readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')
  await page.evaluate(`${axeSource}\n;undefined`)
  return page.evaluate(async () => {
    const w = window as unknown as {
      axe: { run(ctx: Document, opts: unknown): Promise<{ violations: AxeViolation[] }> }
    }
    const r = await w.axe.run(document, { resultTypes: ['violations'] })
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target, html: n.html })),
    }))
  })
}

/** Serious and critical violations, as text for an assertion message. */
export function serious(v: readonly AxeViolation[]): string[] {
  return v
    .filter((x) => x.impact === 'serious' || x.impact === 'critical')
    .map((x) => `${x.id} (${x.impact}): ${x.help} at ${x.nodes.map((n) => n.target.join(' ')).join(', ')}`)
}
