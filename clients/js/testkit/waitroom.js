// The one launcher of a real waitroom node for the JavaScript tests: `waitroom serve` on
// 127.0.0.1 (a free port the node picks), a scratch data dir, an admin token; stopped by PID.
//
// The binary is $WAITROOM_BIN (scripts/js-test sets it to the one `cargo build` made), else
// <repo>/target/debug/waitroom. Without it the tests skip with a loud message, and with CI=true
// that is an error instead.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { fileURLToPath } from "node:url";

/** Longest wait for a started node to print its URL and answer /readyz. */
const NODE_START_WAIT_MS = 30_000;
/** Longest wait for a node to exit after SIGTERM before it gets SIGKILL. */
const NODE_STOP_WAIT_MS = 10_000;
/** How often a wait re-checks. */
const POLL_INTERVAL_MS = 50;

export const inCi = process.env.CI === "true";

/** Fails under CI=true; otherwise says loudly that `what` is skipped and returns the reason. */
export function skipReason(message) {
  if (inCi) throw new Error(`CI=true: ${message}`);
  process.stderr.write(`\n**************** SKIPPED: ${message} ****************\n\n`);
  return message;
}

export function waitroomBinary() {
  const fromEnv = process.env.WAITROOM_BIN;
  const path = fromEnv || fileURLToPath(new URL("../../../target/debug/waitroom", import.meta.url));
  return existsSync(path) ? path : null;
}

/** false when the binary is there, else the (loud) reason to skip (for node:test's `skip`). */
export function missingWaitroom() {
  if (waitroomBinary() !== null) return false;
  return skipReason(
    `the waitroom binary is missing (${process.env.WAITROOM_BIN || "target/debug/waitroom"}): build it with ` +
      "`cargo build -p waitroom` or set WAITROOM_BIN; the JavaScript tests against a real node are SKIPPED",
  );
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns something truthy, at most `withinMs`. */
export async function eventually(what, withinMs, check) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`not within ${withinMs} ms: ${what}`);
    await sleep(POLL_INTERVAL_MS);
  }
}

/**
 * Starts a node; `args` are extra `waitroom serve` flags. Returns
 * `{url, jwksUrl, adminToken, pid, putRoom, room, stop, log}`.
 */
export async function startWaitroom({ args = [] } = {}) {
  const bin = waitroomBinary();
  if (bin === null) throw new Error("no waitroom binary (see missingWaitroom)");
  const dataDir = mkdtempSync(joinPath(tmpdir(), "waitroom-js-"));
  const adminToken = `js-test-${randomBytes(16).toString("hex")}`;
  const child = spawn(
    bin,
    ["serve", "--listen", "127.0.0.1:0", "--data-dir", joinPath(dataDir, "data"), "--admin-token", adminToken, "--drain-timeout-ms", "1000", ...args],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } },
  );
  let log = "";
  let exited = null;
  const onExit = () => {
    if (exited === null) child.kill("SIGKILL");
  };
  process.on("exit", onExit); // a test that throws must not leave the node running
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  child.stdout.setEncoding("utf8").on("data", (chunk) => {
    log += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk) => {
    log += chunk;
  });

  const stop = async () => {
    process.off("exit", onExit);
    if (exited === null) {
      child.kill("SIGTERM");
      const deadline = Date.now() + NODE_STOP_WAIT_MS;
      while (exited === null && Date.now() < deadline) await sleep(POLL_INTERVAL_MS);
      if (exited === null) {
        child.kill("SIGKILL");
        while (exited === null) await sleep(POLL_INTERVAL_MS);
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
    if (/panicked/.test(log)) throw new Error(`the waitroom node panicked:\n${log}`);
  };

  let url;
  try {
    url = await eventually("the node prints its URL", NODE_START_WAIT_MS, () => {
      if (exited !== null) throw new Error(`waitroom exited (${JSON.stringify(exited)}):\n${log}`);
      const match = /waitroom is serving at (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
      return match && match[1];
    });
    await eventually("the node is ready", NODE_START_WAIT_MS, async () => {
      try {
        return (await fetch(`${url}/readyz`)).status === 200;
      } catch {
        return false;
      }
    });
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }

  const admin = async (method, path, body) => {
    const response = await fetch(url + path, {
      method,
      headers: { Authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json();
    if (response.status !== 200) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
    return data;
  };

  return {
    url,
    jwksUrl: `${url}/.well-known/jwks.json`,
    adminToken,
    pid: child.pid,
    /** Creates or replaces a room (PUT /api/waiting-room/rooms/{id}); returns the RoomBody. */
    putRoom: (id, config) => admin("PUT", `/api/waiting-room/rooms/${id}`, config),
    /** The RoomBody of a room. */
    room: (id) => admin("GET", `/api/waiting-room/rooms/${id}`),
    stop,
    log: () => log,
  };
}
