// Tried as a new user would: the example ticket shop (examples/ticketing: a custom waiting page
// on @waitroom/client, a seat page behind @waitroom/node's middleware) gets a person through a
// room in headless Chromium, driven over WebDriver (chromedriver, spoken to with fetch), against
// a real waitroom node.
//
// Chromium and chromedriver are Debian's (`apt-get install chromium chromium-driver`; paths
// overridable with WAITROOM_CHROMIUM / WAITROOM_CHROMEDRIVER). Without them the test skips
// loudly, and with CI=true that is an error. chromedriver is started here on a free loopback
// port with a fresh profile and stopped by PID.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { once } from "node:events";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { after, before, describe, test } from "node:test";

import { join, leave } from "@waitroom/client";

import { createApp } from "../examples/ticketing/server.js";
import { eventually, missingWaitroom, skipReason, sleep, startWaitroom } from "../testkit/waitroom.js";

const CHROMIUM = process.env.WAITROOM_CHROMIUM || "/usr/bin/chromium";
const CHROMEDRIVER = process.env.WAITROOM_CHROMEDRIVER || "/usr/bin/chromedriver";
/** Longest wait for chromedriver to answer /status after its start. */
const DRIVER_START_WAIT_MS = 20_000;
/** Longest wait for the page to reach a state (it heartbeats every second in the test room). */
const PAGE_WAIT_MS = 30_000;
/** Longest wait for one WebDriver command (a navigation included). */
const WEBDRIVER_COMMAND_TIMEOUT_MS = 60_000;
/** Idle timeouts of the test room: the holder session, driven by the test, never heartbeats. */
const LONG_IDLE_SECONDS = 600;

function browserMissing() {
  const missing = [CHROMIUM, CHROMEDRIVER].filter((path) => !existsSync(path));
  if (missing.length === 0) return false;
  return skipReason(
    `the browser test needs ${missing.join(" and ")} (Debian: apt-get install chromium chromium-driver; or set ` +
      "WAITROOM_CHROMIUM / WAITROOM_CHROMEDRIVER)",
  );
}

const skip = missingWaitroom() || browserMissing();

async function freePort() {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A headless Chromium through a chromedriver of its own. */
async function startBrowser() {
  const profile = mkdtempSync(joinPath(tmpdir(), "waitroom-js-chromium-"));
  const port = await freePort();
  const driver = spawn(CHROMEDRIVER, [`--port=${port}`, `--log-path=${joinPath(profile, "chromedriver.log")}`], { stdio: "ignore" });
  let exited = false;
  driver.on("exit", () => {
    exited = true;
  });
  const killDriver = () => {
    if (!exited) driver.kill("SIGKILL");
  };
  process.on("exit", killDriver);
  const base = `http://127.0.0.1:${port}`;

  const command = async (method, path, body) => {
    const response = await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WEBDRIVER_COMMAND_TIMEOUT_MS),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(`WebDriver ${method} ${path}: ${response.status} ${JSON.stringify(data.value)}`);
    return data.value;
  };

  const stop = async () => {
    process.off("exit", killDriver);
    if (!exited) {
      driver.kill("SIGTERM");
      await eventually("chromedriver exits", 10_000, () => exited).catch(() => driver.kill("SIGKILL"));
    }
    rmSync(profile, { recursive: true, force: true });
  };

  try {
    await eventually("chromedriver answers", DRIVER_START_WAIT_MS, async () => {
      if (exited) throw new Error("chromedriver exited at start");
      try {
        return (await command("GET", "/status")).ready === true;
      } catch {
        return false;
      }
    });
  } catch (error) {
    await stop();
    throw error;
  }

  let session;
  try {
    session = await command("POST", "/session", {
      capabilities: {
        alwaysMatch: {
          browserName: "chrome",
          "goog:chromeOptions": {
            binary: CHROMIUM,
            args: [
              "--headless=new",
              "--no-sandbox",
              "--disable-gpu",
              "--no-first-run",
              "--disable-background-networking",
              "--disable-component-update",
              "--disable-sync",
              `--user-data-dir=${joinPath(profile, "chromium")}`,
              "--window-size=390,844",
              "--lang=en-US",
            ],
          },
        },
      },
    });
  } catch (error) {
    await stop();
    throw error;
  }
  const id = session.sessionId;
  const browser = {
    goto: (url) => command("POST", `/session/${id}/url`, { url }),
    /** Runs `script` (a function body) in the page. */
    run: (script, args = []) => command("POST", `/session/${id}/execute/sync`, { script, args }),
    /** What the page shows, for failure messages. */
    describe: () =>
      browser
        .run("return JSON.stringify({url: location.href, state: document.body && document.body.dataset.state, text: document.body && document.body.innerText});")
        .catch((error) => `(unreadable: ${error.message})`),
    /** Polls `script` until it returns something truthy. */
    waitFor: async (what, script) => {
      try {
        return await eventually(what, PAGE_WAIT_MS, () => browser.run(script).catch(() => null)); // navigating: not yet
      } catch (error) {
        throw new Error(`${error.message}; the page shows ${await browser.describe()}`);
      }
    },
    close: async () => {
      await command("DELETE", `/session/${id}`).catch(() => {});
      await stop();
    },
  };
  return browser;
}

describe("a custom waiting page built with @waitroom/client, in Chromium", { skip }, () => {
  const room = "js-shop";
  let node;
  let shop;
  let shopServer;
  let browser;

  before(async () => {
    node = await startWaitroom({ args: ["--join-rate-per-ip", "0"] });
    shopServer = createApp({ waitroomUrl: node.url, room }).listen(0, "127.0.0.1");
    await once(shopServer, "listening");
    shop = `http://127.0.0.1:${shopServer.address().port}`;
    // The room sends admitted people to the shop's seat page.
    await node.putRoom(room, {
      capacity: 1,
      heartbeatIntervalSeconds: 1,
      activeIdleTimeoutSeconds: LONG_IDLE_SECONDS,
      waitingIdleTimeoutSeconds: LONG_IDLE_SECONDS,
      targetUrl: `${shop}/seats`,
    });
    browser = await startBrowser();
  });
  after(async () => {
    await browser?.close();
    if (shopServer) {
      shopServer.closeAllConnections?.();
      await new Promise((resolve) => shopServer.close(resolve));
    }
    await node?.stop();
  });

  test("the seat page refuses a visitor without a token", async () => {
    await browser.goto(`${shop}/seats`);
    const text = await browser.waitFor("the 401 problem", "return document.body && document.body.innerText.includes('no admission token') && document.body.innerText;");
    assert.match(text, /"status":401/);
  });

  test("a person waits in line on the page, is admitted when a slot frees, and reaches the seats", async () => {
    // Someone holds the only slot.
    const holder = await join(room, { baseUrl: node.url });
    assert.equal(holder.view.status, "ACTIVE");

    await browser.goto(`${shop}/queue/?room=${room}`);
    await browser.waitFor(
      "the page waiting at position 0",
      "return document.body.dataset.state === 'waiting' && document.getElementById('position').dataset.position === '0' && document.getElementById('position').textContent;",
    );
    const waiting = await node.room(room);
    assert.equal(waiting.stats.waitingCount, 1);
    assert.equal(waiting.stats.activeCount, 1);
    // The page keeps its place by heartbeating: still waiting a few heartbeats later.
    await sleep(2_500);
    assert.equal(await browser.run("return document.body.dataset.state;"), "waiting");

    await leave(holder);
    const session = await browser.waitFor(
      "the seat page, admitted",
      "return location.pathname === '/seats' && document.body.dataset.state === 'admitted' && document.body.dataset.session;",
    );
    assert.match(session, /^wr_/);
    assert.match(await browser.run("return document.getElementById('heading').textContent;"), /pick your seats/);
    // The token came in the URL, as the node's own page sends it.
    assert.match(await browser.run("return location.search;"), /^\?waitroomToken=ey/);
    const admitted = await node.room(room);
    assert.equal(admitted.stats.activeCount, 1);
    assert.equal(admitted.stats.waitingCount, 0);
    assert.equal(admitted.stats.admittedTotal, 2);
  });

  test("a person who leaves from the page gives up the place", async () => {
    // The slot is taken (by the person admitted above); this one waits, then leaves.
    await browser.goto(`${shop}/queue/?room=${room}`);
    await browser.waitFor("the page waiting", "return document.body.dataset.state === 'waiting';");
    assert.equal((await node.room(room)).stats.waitingCount, 1);
    await browser.run("document.getElementById('leave').click(); return true;");
    await browser.waitFor("the page saying the person left", "return document.body.dataset.state === 'left';");
    const stats = (await node.room(room)).stats;
    assert.equal(stats.waitingCount, 0);
    assert.equal(stats.expiredTotal.left >= 2, true, JSON.stringify(stats)); // the holder and this person
  });
});
