// Browser scenarios for tests/e2e/test_ui.py: real headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. `node scenarios.mjs <scenario>` reads its settings as JSON on stdin, prints one JSON line
// of what it saw, and saves screenshots in settings.artifacts. Assertions live in the Python test.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const settings = JSON.parse(readFileSync(0, "utf8"));
mkdirSync(settings.artifacts, { recursive: true });
const TERMINAL = /^(Succeeded|Failed|Cancelled)$/;

// playwright-core gives every launch a fresh --user-data-dir of its own (it refuses one passed in `args`).
async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

const pages = [];

async function signIn(browser, token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  pages.push(page);
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(settings.url + "/");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("[data-testid=user]");
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(settings.artifacts, `${name}.png`), fullPage: true });

async function fill(page, fields) {
  for (const [selector, value] of fields) {
    const element = page.locator(selector);
    if (value === "click") {
      await element.click();
      continue;
    }
    const tag = await element.evaluate((e) => `${e.tagName}:${e.getAttribute("type") ?? ""}`);
    if (tag === "INPUT:checkbox") await element.setChecked(Boolean(value));
    else if (tag.startsWith("SELECT")) await element.selectOption({ label: String(value) });
    else await element.fill(typeof value === "string" ? value : JSON.stringify(value));
  }
}

async function phaseOf(page, pattern, timeout) {
  await page.locator("[data-testid=phase]").filter({ hasText: pattern }).waitFor({ timeout });
  return (await page.locator("[data-testid=phase]").textContent()).trim();
}

/** Open a definition's form from the list, fill it, run it: returns the run page. */
async function runFromForm(page, view, path, fields, name) {
  await page.goto(`${settings.url}/#/ns/${settings.namespace}/${view}`);
  await page.click(`a:text-is("${path}")`);
  await page.waitForSelector("form button[type=submit]");
  await fill(page, fields);
  await shot(page, `${name}-form`);
  await page.click("form button[type=submit]");
  await page.waitForURL(/#\/ns\/.*\/run\//);
  return decodeURIComponent(page.url().split("/").pop());
}

const scenarios = {
  async fetch_and_transform(browser) {
    const page = await signIn(browser, settings.tokens.alice);
    const run = await runFromForm(page, "scripts", settings.path, settings.fields, "fetch-and-transform");
    const phase = await phaseOf(page, TERMINAL, settings.timeoutMs);
    if (phase === "Succeeded") await page.waitForSelector("[data-testid=result]");
    await page.locator("[data-testid=logs]").filter({ hasText: /\S/ }).waitFor({ timeout: 30000 }).catch(() => {});
    await shot(page, "fetch-and-transform-result");
    return {
      run,
      phase,
      result: phase === "Succeeded" ? JSON.parse(await page.locator("[data-testid=result]").textContent()) : null,
      error: (await page.locator("[data-testid=run-error]").count()) ? await page.locator("[data-testid=run-error]").textContent() : null,
      logs: await page.locator("[data-testid=logs]").textContent(),
    };
  },

  async resource_picker(browser) {
    const page = await signIn(browser, settings.tokens.alice);
    await page.goto(`${settings.url}/#/ns/${settings.namespace}/scripts`);
    await page.click(`a:text-is("${settings.path}")`);
    const picker = page.locator(settings.picker);
    await picker.locator("option", { hasText: settings.choose }).waitFor({ state: "attached" });
    const offered = await picker.locator("option").evaluateAll((els) => els.map((e) => [e.value, e.textContent]));
    const run = await runFromForm(page, "scripts", settings.path, [[settings.picker, settings.choose]], "resource-picker");
    const phase = await phaseOf(page, TERMINAL, settings.timeoutMs);
    if (phase === "Succeeded") await page.waitForSelector("[data-testid=result]");
    await shot(page, "resource-picker-result");
    return {
      run,
      phase,
      offered,
      result: phase === "Succeeded" ? JSON.parse(await page.locator("[data-testid=result]").textContent()) : null,
      error: (await page.locator("[data-testid=run-error]").count()) ? await page.locator("[data-testid=run-error]").textContent() : null,
    };
  },

  async approve_order(browser) {
    const alice = await signIn(browser, settings.tokens.alice);
    const run = await runFromForm(alice, "flows", settings.path, settings.fields, "order-flow");
    await phaseOf(alice, /^Suspended$/, settings.timeoutMs);
    await alice.waitForSelector("[data-testid=approval]");
    await shot(alice, "order-flow-suspended");

    const mallory = await signIn(browser, settings.tokens.mallory);
    await mallory.goto(`${settings.url}/#/ns/${settings.namespace}/run/flowruns/${run}`);
    await mallory.waitForSelector("[data-testid=approval]");
    await mallory.fill("#approval-comment", "looks fine to me");
    await mallory.click("button:text-is('Approve')");
    const refusal = mallory.locator("[data-testid=approval-message]");
    await refusal.waitFor();
    await shot(mallory, "order-flow-mallory-refused");
    const malloryMessage = await refusal.textContent();

    await alice.fill("#approval-comment", "approved by the manager");
    await alice.click("button:text-is('Approve')");
    // A handle, not a locator: once the approval lets the flow go on, the panel holding the message goes away.
    const aliceMessage = await (await alice.waitForSelector("[data-testid=approval-message]")).textContent();
    const phase = await phaseOf(alice, TERMINAL, settings.timeoutMs);
    await alice.waitForSelector("[data-testid=ledger]");
    await shot(alice, "order-flow-approved");
    const steps = await alice.locator("[data-step]").evaluateAll((els) =>
      Object.fromEntries(els.map((e) => [e.getAttribute("data-step"), e.getAttribute("data-phase")])),
    );
    // A step's stored log, opened from the step graph (the child run's pod is long gone by now).
    const stepLog = alice.locator("[data-step=validate_order] [data-testid=step-log]").first();
    await stepLog.locator("summary").click();
    await stepLog.locator("[data-testid=logs]").filter({ hasText: /attempt 1/ }).waitFor({ timeout: 30000 });
    await shot(alice, "order-flow-step-log");
    const validateLog = await stepLog.locator("[data-testid=logs]").textContent();
    return { run, malloryMessage, aliceMessage, phase, steps, validateLog, ledger: await alice.locator("[data-testid=ledger]").textContent() };
  },
};

const browser = await launch();
try {
  const seen = await scenarios[process.argv[2]](browser);
  console.log(JSON.stringify(seen));
} catch (error) {
  // What each page showed when it went wrong, for the test's failure message and the artefacts.
  const shown = [];
  for (const [i, page] of pages.entries()) {
    await shot(page, `${process.argv[2]}-failure-${i}`).catch(() => {});
    shown.push({ url: page.url(), text: (await page.locator("main").textContent().catch(() => "")).slice(0, 2000) });
  }
  console.log(JSON.stringify({ failure: String(error.message ?? error).slice(0, 1500), pages: shown }));
} finally {
  await browser.close();
}
