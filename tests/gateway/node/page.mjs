// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core: sign in to the gateway's
// usage page through its form, read the figures it shows, take a full-page screenshot.
// Env: PAGE_URL (the gateway's root), PAGE_TOKEN (admin token or virtual key), PAGE_SCREENSHOT (PNG path),
// PAGE_PROFILE (a fresh, empty user-data dir), optional CHROMIUM (the browser binary).
// Prints one JSON object on stdout.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`page.mjs: set ${name} in the environment`);
    process.exit(2);
  }
  return value;
};

const STEP_MS = 10_000; // every wait is bounded; the Python side bounds the whole run too
const url = env("PAGE_URL");
const context = await chromium.launchPersistentContext(env("PAGE_PROFILE"), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: 30_000,
  viewport: { width: 1280, height: 800 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_MS);
  const first = await page.goto(url, { waitUntil: "load" });
  const loginStatus = first.status();
  await page.fill('input[name="token"]', env("PAGE_TOKEN"));
  await Promise.all([page.waitForURL((u) => u.pathname === "/" && !u.search), page.click('button[type="submit"]')]);
  await page.waitForSelector("table#keys");

  const figures = await page.evaluate(() => {
    const cells = (row) => [...row.querySelectorAll("td")].map((td) => td.textContent.trim());
    const keys = [...document.querySelectorAll("table#keys tr")].slice(1).map((row) => {
      const td = row.querySelectorAll("td");
      return {
        name: td[0].firstChild.textContent.trim(),
        display: td[0].querySelector("span")?.textContent.trim() ?? "",
        today: td[1].textContent.trim(),
        month: td[2].textContent.trim(),
        budget: td[3].textContent.trim(),
        remaining: td[4].textContent.trim(),
        rpm: td[5].textContent.trim(),
        tpm: td[6].textContent.trim(),
        concurrency: td[7].textContent.trim(),
        models: td[8].textContent.trim(),
      };
    });
    const days = [...document.querySelectorAll("table#days tr")].slice(1).map((row) => {
      const [day, requests, tokens, cost] = cells(row);
      return { day, requests, tokens, cost };
    });
    const problems = [...document.querySelectorAll("table#problems tr")].slice(1).map(cells);
    const charts = {};
    for (const chart of document.querySelectorAll("div.chart")) {
      const bars = [...chart.querySelectorAll(".bar")];
      charts[chart.id.replace(/^chart-/, "")] = {
        bars: bars.length,
        // What a person sees: the bar's rendered height in CSS pixels, and its tooltip.
        heights: bars.map((b) => b.getBoundingClientRect().height),
        titles: bars.map((b) => b.getAttribute("title")),
      };
    }
    return { title: document.title, heading: document.querySelector("h1").textContent.trim(), keys, days, problems, charts };
  });
  const cookies = (await context.cookies()).map((c) => ({ name: c.name, value: c.value, httpOnly: c.httpOnly }));
  const shot = env("PAGE_SCREENSHOT");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ loginStatus, finalUrl: page.url(), cookies, screenshot: shot, ...figures }));
} finally {
  await context.close();
}
