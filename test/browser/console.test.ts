/**
 * The operator console in a real headless browser: Debian's Chromium driven by puppeteer-core
 * (which downloads no browser of its own). A demo-like run behind `itk3 serve` with the console
 * (test/support/console.ts): the page is opened, a wrong token refused, the right one typed in;
 * the traces, a hostile message's stage timeline, the dead letter and both charts must render,
 * with no script error, no CSP violation and no request leaving the origin; the redrive button
 * moves the dead letter back through the runtime. Ends with a screenshot (docs/console.png when
 * ITK3_CONSOLE_SCREENSHOT names that path: `npm run console:screenshot`).
 *
 * Skipped, with the reason printed, where no Chromium is installed (`.ci/run` installs it).
 */
import '../support/env.js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DemoWorld } from '../../lib/testkit/world.js';
import { type ConsoleRun, startConsoleRun } from '../support/console.js';
import { makeTempDir, removeTempDirs, testWorld } from '../support/world.js';

const CANDIDATES = [
  process.env.ITK3_CHROMIUM,
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
].filter((p): p is string => Boolean(p));
const chromium = CANDIDATES.find((p) => existsSync(p));
if (!chromium) {
  console.warn(
    `console browser test skipped: no Chromium at ${CANDIDATES.join(', ')} ` +
      '(apt-get install -y chromium, or set ITK3_CHROMIUM)',
  );
}

const SCREENSHOT = process.env.ITK3_CONSOLE_SCREENSHOT;

describe.skipIf(!chromium)('operator console in headless Chromium', () => {
  let world: DemoWorld;
  let run: ConsoleRun;
  let browser: Browser;
  let page: Page;
  /** Script errors, console errors (CSP violations are reported there) and off-origin requests. */
  const problems: string[] = [];

  beforeAll(async () => {
    world = await testWorld();
    run = await startConsoleRun(world);
    browser = await puppeteer.launch({
      executablePath: chromium!,
      headless: true,
      // Root (CI, containers) cannot use Chromium's sandbox; /dev/shm is small in containers.
      args: [...(process.getuid?.() === 0 ? ['--no-sandbox'] : []), '--disable-dev-shm-usage'],
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1440, height: 900 });
    page.on('pageerror', (error) => problems.push(`page error: ${(error as Error).message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
    });
    page.on('request', (request) => {
      if (!request.url().startsWith(`${run.origin}/`)) problems.push(`off-origin request: ${request.url()}`);
    });
  });

  afterAll(async () => {
    await browser?.close();
    await run?.server.close();
    removeTempDirs();
  });

  const rowText = (selector: string) => page.$eval(selector, (row) => row.textContent ?? '');

  it('asks for the operator token and refuses a wrong one', async () => {
    await page.goto(`${run.origin}/console/`, { waitUntil: 'networkidle0' });
    await page.type('#token', 'not-the-operator-token-but-long-enough-0000');
    await page.click('.token-form button[type=submit]');
    await page.waitForSelector('.token-form .error');
    expect(await page.$eval('.token-form .error', (e) => e.textContent)).toBe('That token was refused.');
    expect(await page.$('#traces')).toBeNull();
  });

  it('with the token, shows the recent traces and their outcomes', async () => {
    problems.length = 0; // the refused token's 401s were expected
    await page.$eval('#token', (input) => {
      (input as unknown as { value: string }).value = '';
    });
    await page.type('#token', run.token);
    await page.click('.token-form button[type=submit]');
    await page.waitForSelector(`#traces tr[data-trace="${run.traces.deadLettered}"]`);
    for (const id of run.traces.delivered) {
      expect(await rowText(`#traces tr[data-trace="${id}"]`)).toMatch(/delivered.*deliver.*20013/);
    }
    expect(await rowText(`#traces tr[data-trace="${run.traces.hostile}"]`)).toMatch(
      /X26 → A83627.*rejected.*verify.*20012.*SIGNATURE_KEY_NOT_SENDERS/,
    );
    expect(await rowText(`#traces tr[data-trace="${run.traces.deadLettered}"]`)).toMatch(
      // No stage that audits a recipient ran to completion, so only the sender is known.
      /FQ123 → \?.*dead-lettered.*deliver.*DELIVERY_UNAVAILABLE/,
    );
    // The token stays in this tab's sessionStorage and never reaches a cookie.
    expect(await page.evaluate('document.cookie')).toBe('');
  });

  it("shows a hostile message's stage timeline", async () => {
    await page.click(`#traces tr[data-trace="${run.traces.hostile}"] button`);
    await page.waitForSelector(`#timeline[data-trace="${run.traces.hostile}"]`);
    const stages = await page.$$eval('#timeline li.stage', (items) =>
      items.map((li) => `${li.textContent}=${li.getAttribute('data-state')}`),
    );
    expect(stages).toEqual([
      'authenticate=passed',
      'authorise=passed',
      'decrypt=passed',
      'verify=rejected',
      'deliver=responded',
    ]);
    const events = await page.$$eval('#timeline tr.event', (rows) =>
      rows.map((r) =>
        [...r.querySelectorAll('td')]
          .map((td) => td.textContent)
          .slice(1, 5)
          .join(' '),
      ),
    );
    expect(events).toContain('verify rejected SIGNATURE_KEY_NOT_SENDERS 20012');
    expect(events).toContain('deliver response-sent SIGNATURE_KEY_NOT_SENDERS 20012');
  });

  it('draws both per-minute charts with their series', async () => {
    const charts = await page.$$eval('#charts .uplot', (plots) =>
      plots.map((plot) => ({
        title: plot.querySelector('.u-title')?.textContent,
        canvas: (() => {
          const c = plot.querySelector('canvas');
          return c ? { width: c.width, height: c.height } : undefined;
        })(),
        series: [...plot.querySelectorAll('.u-legend .u-label')].map((l) => l.textContent),
      })),
    );
    expect(charts.map((c) => c.title)).toEqual(['Outcomes by deciding stage', 'ITK3 codes']);
    for (const chart of charts) {
      expect(chart.canvas!.width).toBeGreaterThan(200);
      expect(chart.canvas!.height).toBeGreaterThan(100);
    }
    expect(charts[0]!.series).toEqual(['authenticate', 'authorise', 'decrypt', 'verify', 'deliver']);
    expect(charts[1]!.series).toEqual(expect.arrayContaining(['20012', '20013']));
  });

  it('lists the dead letter with its reason, and its redrive button runs it again, audited as the operator’s', async () => {
    const row = '#dead-letters tr[data-dead-letter]';
    await page.waitForSelector(row);
    expect(await rowText(row)).toMatch(/deliver.*DELIVERY_UNAVAILABLE.*Redrive/);
    await page.click(`${row} button.redrive`);
    await page.waitForSelector('.notice');
    expect(await page.$eval('.notice', (e) => e.textContent)).toMatch(/^Redriven \S+ back to deliver$/);

    // The timeline switched to the redriven trace and shows the operator's entry.
    await page.waitForSelector(`#timeline[data-trace="${run.traces.deadLettered}"] tr.event.redriven`);
    expect(await rowText('#timeline tr.event.redriven')).toMatch(
      /operator.*redriven.*back to deliver by console/,
    );
    const audit = await run.server.pipeline.audit.byTrace(run.traces.deadLettered);
    expect(audit.filter((e) => e.event === 'redriven')).toEqual([
      expect.objectContaining({ stage: 'operator', detail: 'back to deliver by console' }),
    ]);

    // The target is still unreachable: it is dead-lettered again, which the next refresh shows.
    await run.server.idle();
    const deadLetteredAgain = async () => {
      const events = await page.$$eval('#timeline tr.event', (rows) => rows.map((r) => r.className));
      return events.lastIndexOf('event dead-lettered') > events.indexOf('event redriven');
    };
    const deadline = Date.now() + 15_000;
    while (!(await deadLetteredAgain()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    expect(await deadLetteredAgain()).toBe(true);
    await page.waitForSelector('#dead-letters tr[data-dead-letter]', { timeout: 15_000 });
  });

  it('ran without a script error, a CSP violation or a request leaving the origin; screenshot', async () => {
    expect(problems).toEqual([]);
    const file = SCREENSHOT ? resolve(SCREENSHOT) : join(makeTempDir('itk3-console-shot-'), 'console.png');
    await page.screenshot({ path: file, fullPage: true });
    const png = readFileSync(file);
    expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
    expect(statSync(file).size).toBeGreaterThan(20_000);
    expect(statSync(file).size).toBeLessThan(200 * 1024);
  });
});
