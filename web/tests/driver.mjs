#!/usr/bin/env node
// Browser driver for end-to-end tests: one headless Chromium, driven by JSON lines on stdin.
//
//   node tests/driver.mjs            (Chromium from $CHROMIUM, default /usr/bin/chromium;
//                                     $CHROMIUM_ARGS: more flags, space-separated or as a
//                                     JSON array of strings; $FAKE_MICROPHONE: a WAV file
//                                     every page's microphone plays in a loop, instead of
//                                     Chromium's beep)
//
// Each stdin line is a command `{"id": N, "cmd": "...", ...}`; each stdout line is the reply
// `{"id": N, "ok": true, "value": ...}` or `{"id": N, "ok": false, "error": "..."}`, the error
// with `"timeout": true` when a wait ran out (waitText, or an element that never became
// visible/enabled for click/fill/select), and for waitText `"last"`: the last text seen (null
// when there was no such element). Commands run
// one after another in arrival order. Logs (the driver's own, and every page's console messages
// and errors, prefixed with the page name) go to stderr. The driver exits after `quit`, or when
// stdin closes, or on SIGTERM/SIGINT, closing the browser first.
//
// Commands (page: a name chosen by the caller; each page has its own browser context, so two
// phones in one browser share no storage or permissions; testid: a `data-testid` value):
//   open       {page, url}                 new page with microphone permission, loads url
//                                          → {url, title}
//   click      {page, testid}              waits until visible and enabled, clicks → null
//   fill       {page, testid, value}       replaces an input's value → null
//   select     {page, testid, value}       a <select>: picks the option with that value or
//                                          label; any other input: fill → null
//   text       {page, testid}              an input's value, else the element's visible text
//   waitText   {page, testid, pattern, timeoutMs}
//                                          polls `text` until the regex `pattern` matches →
//                                          the text; on timeout an error with the last text
//   visible    {page, testid}              whether the element exists and is visible (no wait)
//   download   {page, testid, path}        clicks, waits for the download it starts, saves it
//                                          at path (folders created) → the suggested file name
//   eval       {page, js}                  an expression, or an async function body (with
//                                          `return`), run in the page → its JSON value
//   screenshot {page, path}                full-page PNG at path (folders created) → path
//   close      {page}                      closes the page and its context → null
//   quit       {}                          closes the browser, replies null, exits 0
// click, fill, select and download wait for their element (download: and for the download)
// for `timeoutMs` (default 10000).

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** `$CHROMIUM_ARGS`: a JSON array of flags, or flags separated by spaces. */
function extraArgs(value) {
  const text = (value || '').trim();
  if (text.startsWith('[')) return JSON.parse(text).map(String);
  return text.split(/\s+/).filter(Boolean);
}
const MICROPHONE = process.env.FAKE_MICROPHONE;
const ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  ...(MICROPHONE ? [`--use-file-for-fake-audio-capture=${MICROPHONE}`] : []),
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--no-first-run',
  '--no-default-browser-check',
  ...extraArgs(process.env.CHROMIUM_ARGS),
];
const DEFAULT_TIMEOUT_MS = 10_000;
const POLL_MS = 50;

/** An error the reply marks with `"timeout": true`, like Playwright's own TimeoutError. */
function timeoutError(message) {
  const e = new Error(message);
  e.name = 'TimeoutError';
  return e;
}

const log = (...parts) => process.stderr.write(`[driver] ${parts.join(' ')}\n`);

let browser = null;
/** name → {context, page} */
const pages = new Map();

async function launch() {
  if (!browser) {
    log(`launching ${CHROMIUM}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
    browser.on('disconnected', () => {
      log('browser disconnected');
      browser = null;
      pages.clear();
    });
  }
  return browser;
}

function need(args, ...names) {
  for (const name of names) {
    if (args[name] === undefined || args[name] === null) throw new Error(`missing "${name}"`);
  }
}

function pageOf(args) {
  need(args, 'page');
  const entry = pages.get(args.page);
  if (!entry) throw new Error(`no page "${args.page}" (open it first)`);
  return entry.page;
}

function locator(args) {
  need(args, 'testid');
  return pageOf(args).getByTestId(args.testid);
}

const timeoutOf = (args) => (Number.isFinite(args.timeoutMs) ? args.timeoutMs : DEFAULT_TIMEOUT_MS);

/** An input's value, else the visible text; null when there is no such element. */
async function readText(args) {
  const page = pageOf(args);
  need(args, 'testid');
  return page.evaluate((testid) => {
    const el = document.querySelector(`[data-testid="${CSS.escape(testid)}"]`);
    if (!el) return null;
    if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) {
      return el.value;
    }
    return el.innerText;
  }, args.testid);
}

/** Whether `js` parses as one expression (else it is taken as a function body). */
function isExpression(js) {
  try {
    // Only compiled, never run; async so `await` is allowed in the expression.
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
    new AsyncFunction(`return (${js}\n);`);
    return true;
  } catch {
    return false;
  }
}

function forwardPageLogs(name, page) {
  page.on('console', (m) => process.stderr.write(`[${name}] console.${m.type()}: ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[${name}] page error: ${e.stack || e.message}\n`));
  page.on('requestfailed', (r) => {
    const failure = r.failure();
    process.stderr.write(`[${name}] request failed: ${r.method()} ${r.url()} ${failure ? failure.errorText : ''}\n`);
  });
  page.on('crash', () => process.stderr.write(`[${name}] page crashed\n`));
}

const commands = {
  async open(args) {
    need(args, 'page', 'url');
    if (pages.has(args.page)) throw new Error(`page "${args.page}" is already open`);
    const b = await launch();
    const context = await b.newContext({ permissions: ['microphone'], viewport: { width: 420, height: 900 } });
    const page = await context.newPage();
    forwardPageLogs(args.page, page);
    pages.set(args.page, { context, page });
    try {
      await page.goto(args.url, { waitUntil: 'load', timeout: timeoutOf(args) });
    } catch (e) {
      pages.delete(args.page);
      await context.close().catch(() => {});
      throw e;
    }
    return { url: page.url(), title: await page.title() };
  },

  async click(args) {
    await locator(args).click({ timeout: timeoutOf(args) });
    return null;
  },

  async fill(args) {
    need(args, 'value');
    await locator(args).fill(String(args.value), { timeout: timeoutOf(args) });
    return null;
  },

  async select(args) {
    need(args, 'value');
    const target = locator(args);
    const tag = await target.evaluate((el) => el.tagName, undefined, { timeout: timeoutOf(args) });
    if (tag === 'SELECT') {
      const value = String(args.value);
      const options = await target.evaluate((el) => [...el.options].map((o) => [o.value, o.label]));
      const byLabel = !options.some(([v]) => v === value) && options.some(([, l]) => l === value);
      await target.selectOption(byLabel ? { label: value } : { value }, { timeout: timeoutOf(args) });
    } else {
      await target.fill(String(args.value), { timeout: timeoutOf(args) });
    }
    return null;
  },

  async text(args) {
    const text = await readText(args);
    if (text === null) throw new Error(`no element with data-testid="${args.testid}"`);
    return text;
  },

  async waitText(args) {
    need(args, 'pattern');
    const re = new RegExp(args.pattern);
    const deadline = Date.now() + timeoutOf(args);
    let last = null;
    for (;;) {
      last = await readText(args);
      if (last !== null && re.test(last)) return last;
      if (Date.now() >= deadline) {
        const shown = last === null ? 'no such element' : JSON.stringify(last);
        const e = timeoutError(`/${args.pattern}/ not matched within ${timeoutOf(args)} ms; last text: ${shown}`);
        e.last = last;
        throw e;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  },

  async visible(args) {
    return locator(args).isVisible();
  },

  async download(args) {
    need(args, 'path');
    const page = pageOf(args);
    const started = page.waitForEvent('download', { timeout: timeoutOf(args) });
    // Awaited below; if the click fails first, its later rejection must not go unhandled.
    started.catch(() => {});
    await locator(args).click({ timeout: timeoutOf(args) });
    const download = await started;
    await mkdir(path.dirname(path.resolve(args.path)), { recursive: true });
    await download.saveAs(args.path);
    return download.suggestedFilename();
  },

  async eval(args) {
    need(args, 'js');
    const page = pageOf(args);
    const expr = String(args.js).trim().replace(/;+$/, '');
    const source = isExpression(expr)
      ? `(async () => (${expr}\n))()`
      : `(async () => {\n${args.js}\n})()`;
    const value = await page.evaluate(source);
    return value === undefined ? null : value;
  },

  async screenshot(args) {
    need(args, 'path');
    const page = pageOf(args);
    await mkdir(path.dirname(path.resolve(args.path)), { recursive: true });
    await page.screenshot({ path: args.path, fullPage: true });
    return args.path;
  },

  async close(args) {
    need(args, 'page');
    const entry = pages.get(args.page);
    if (!entry) throw new Error(`no page "${args.page}"`);
    pages.delete(args.page);
    await entry.context.close();
    return null;
  },

  async quit() {
    await shutdown();
    return null;
  },
};

async function shutdown() {
  const b = browser;
  browser = null;
  pages.clear();
  if (b) await b.close().catch((e) => log(`closing the browser: ${e.message}`));
}

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Playwright errors carry a call log after the first lines: keep the message readable. */
function errorText(e) {
  // eslint-disable-next-line no-control-regex
  const text = String((e && e.message) || e).replace(/\x1b\[[0-9;]*m/g, '');
  const lines = text.split('\n');
  return lines.length > 12 ? `${lines.slice(0, 12).join('\n')}\n…` : text;
}

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    reply({ id: null, ok: false, error: `not JSON: ${e.message}` });
    return false;
  }
  const id = msg && msg.id !== undefined ? msg.id : null;
  const cmd = msg && msg.cmd;
  const fn = Object.prototype.hasOwnProperty.call(commands, cmd) ? commands[cmd] : null;
  if (!fn) {
    reply({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` });
    return false;
  }
  const started = Date.now();
  try {
    const value = await fn(msg);
    log(`${cmd}${msg.page ? ` ${msg.page}` : ''}${msg.testid ? ` ${msg.testid}` : ''}: ok (${Date.now() - started} ms)`);
    reply({ id, ok: true, value: value === undefined ? null : value });
  } catch (e) {
    const error = `${cmd}: ${errorText(e)}`;
    log(`${cmd}${msg.page ? ` ${msg.page}` : ''}: ${error}`);
    const failure = { id, ok: false, error };
    if (e && e.name === 'TimeoutError') failure.timeout = true;
    if (e && e.last !== undefined) failure.last = e.last;
    reply(failure);
  }
  return cmd === 'quit';
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    if (await handle(line)) break;
  }
  await shutdown();
  process.exit(0);
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log(`${signal}: closing the browser`);
    shutdown().finally(() => process.exit(0));
  });
}

main().catch(async (e) => {
  log(`fatal: ${e.stack || e}`);
  await shutdown();
  process.exit(1);
});
