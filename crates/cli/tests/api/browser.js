// Opens the web chat page of a running `ingot api` in Debian's headless chromium (through
// playwright-core), sends a message and waits for the streamed reply (see tests/api.rs).
// Usage: NODE_PATH=.test-node/node_modules node browser.js BASE_URL SCREENSHOT.png [MESSAGE MAX_TOKENS [IMAGE]]
// (IMAGE, an image, audio or video file, is attached with the page's Attach button before the message is sent.)
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const os = require("os");
const path = require("path");

const [base, screenshot, message = "What is the capital of France?", maxTokens = "12", image] = process.argv.slice(2);

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "ingot-chromium-"));
  // The flags keep chromium off the network (there is none here but loopback) and work as root.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1100, height: 700 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(base + "/");
    await page.waitForFunction(() => !/connecting/.test(document.getElementById("model").textContent));
    await page.$eval("#temperature", (el) => { el.value = "0"; el.dispatchEvent(new Event("input")); });
    await page.fill("#max_tokens", maxTokens);
    if (image) {
      await page.setInputFiles("#image", image);
      await page.waitForFunction(() => /1 (image|audio|video)/.test(document.getElementById("attached").textContent));
    }
    await page.fill("#input", message);
    // Record every length the reply takes while it arrives: a streamed reply grows in steps.
    await page.evaluate(() => {
      window.replyLengths = [];
      new MutationObserver(() => {
        const b = document.querySelector(".msg.assistant .body");
        if (b) window.replyLengths.push(b.textContent.length);
      }).observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true });
    });
    await page.click("#send");
    await page.waitForSelector(".msg.assistant[data-state=done]", { timeout: 120000 });
    const reply = await page.textContent(".msg.assistant .body");
    const status = await page.textContent("#status");
    const steps = new Set(await page.evaluate(() => window.replyLengths.filter((n) => n > 0))).size;
    await page.screenshot({ path: screenshot });
    if (errors.length) throw new Error("page errors: " + errors.join("; "));
    if ((await page.$$(".msg.error")).length) throw new Error("the page shows an error: " + (await page.textContent(".msg.error")));
    const thumbnails = (await page.$$(".msg.user .thumb")).length;
    console.log(JSON.stringify({ reply, status, steps, thumbnails }));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

