// @waitroom/client against a real waitroom node: join, follow to admission, heartbeats at the
// room's cadence, position events, Retry-After and backoff, abort, leave.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createHash } from "node:crypto";
import { createRequire } from "node:module";

import { LIMITS, WaitroomError, follow, join, leave, resume, solveChallenge } from "@waitroom/client";

import { eventually, missingWaitroom, startWaitroom } from "../testkit/waitroom.js";

const skip = missingWaitroom();
/** Idle timeouts of rooms whose sessions the test does not heartbeat itself: outlive the test. */
const LONG_IDLE_SECONDS = 600;
/** Longest a test waits for a follower to see what the node did. */
const FOLLOW_WAIT_MS = 20_000;

describe("@waitroom/client against a real node", { skip }, () => {
  let node;
  before(async () => {
    node = await startWaitroom({ args: ["--join-rate-per-ip", "0"] });
  });
  after(async () => {
    await node?.stop();
  });

  const room = async (id, config) => {
    await node.putRoom(id, {
      activeIdleTimeoutSeconds: LONG_IDLE_SECONDS,
      waitingIdleTimeoutSeconds: LONG_IDLE_SECONDS,
      heartbeatIntervalSeconds: 1,
      ...config,
    });
    return id;
  };

  test("join answers the session: ACTIVE on a free slot, WAITING with a position behind it", async () => {
    const roomId = await room("js-join", { capacity: 1 });
    const first = await join(roomId, { baseUrl: node.url });
    assert.match(first.id, /^wr_/);
    assert.equal(first.roomId, roomId);
    assert.equal(first.view.status, "ACTIVE");
    assert.equal(typeof first.view.admissionToken, "string");
    const second = await join(roomId, { baseUrl: node.url });
    assert.equal(second.view.status, "WAITING");
    assert.equal(second.view.position, 0);
    assert.equal(second.view.heartbeatIntervalSeconds, 1);
    assert.notEqual(first.idempotencyKey, second.idempotencyKey);

    // The same Idempotency-Key answers the same session (a retried join keeps its place).
    const again = await join(roomId, { baseUrl: node.url, idempotencyKey: second.idempotencyKey });
    assert.equal(again.id, second.id);

    // resume(): a page reloaded with the id only.
    const resumed = await resume(second.id, { baseUrl: node.url });
    assert.equal(resumed.view.status, "WAITING");
  });

  test("join solves the challenge a room asks for, once, and gets its place", async () => {
    const roomId = await room("js-challenge", { capacity: 1, challengeDifficultyBits: 12 });
    const challenges = [];
    const first = await join(roomId, { baseUrl: node.url, onChallenge: (event) => challenges.push(event) });
    assert.equal(first.view.status, "ACTIVE");
    assert.equal(challenges.length, 1);
    assert.equal(challenges[0].difficultyBits, 12);
    // A plain join without the client's help is refused.
    const response = await fetch(`${node.url}/api/waiting-room/sessions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ roomId }),
    });
    assert.equal(response.status, 403);
    assert.equal((await response.json()).type, "https://waitroom.dev/problems/challenge-required");
  });

  test("join refuses an unknown room at once, with the problem's kind", async () => {
    let attempts = 0;
    const counting = (...args) => {
      attempts += 1;
      return fetch(...args);
    };
    await assert.rejects(join("js-no-such-room", { baseUrl: node.url, fetch: counting }), (error) => {
      assert.ok(error instanceof WaitroomError);
      assert.equal(error.status, 404);
      assert.equal(error.type, "unknown-room");
      assert.equal(error.retryable, false);
      return true;
    });
    assert.equal(attempts, 1, "a 404 is not retried");
    await assert.rejects(join("not a room id!", { baseUrl: node.url }), TypeError);
  });

  test("a full room's 503 carries Retry-After, which join reports", async () => {
    const roomId = await room("js-full", { capacity: 1, maxWaiting: 1 });
    await join(roomId, { baseUrl: node.url }); // ACTIVE
    await join(roomId, { baseUrl: node.url }); // the one waiting place
    await assert.rejects(join(roomId, { baseUrl: node.url, attemptsMax: 1 }), (error) => {
      assert.equal(error.status, 503);
      assert.equal(error.type, "room-full");
      assert.equal(error.retryable, true);
      assert.ok(error.retryAfterMs > 0, `Retry-After read: ${error.retryAfterMs}`);
      return true;
    });
  });

  test("follow heartbeats at the room's cadence: a place outlives the idle timeout, then admission comes with a token", async () => {
    // Waiting places expire after 3 s without a heartbeat; the room asks for one every second.
    const roomId = await room("js-follow", { capacity: 1, waitingIdleTimeoutSeconds: 3, heartbeatIntervalSeconds: 1 });
    const holder = await join(roomId, { baseUrl: node.url });
    assert.equal(holder.view.status, "ACTIVE");

    const requests = [];
    const recording = (url, init) => {
      requests.push(`${init.method} ${new URL(url).pathname}`);
      return fetch(url, init);
    };
    const person = await join(roomId, { baseUrl: node.url, fetch: recording });
    assert.equal(person.view.status, "WAITING");

    const positions = [];
    let admitted = null;
    const followed = follow(person, {
      onPosition: (event) => positions.push(event.position),
      onAdmitted: (event) => {
        admitted = event;
      },
    });
    // Longer than the idle timeout: only heartbeats keep the place.
    const waitUntil = Date.now() + 4_500;
    await eventually("4.5 s pass", 10_000, () => Date.now() >= waitUntil);
    const view = (await resume(person.id, { baseUrl: node.url })).view;
    assert.equal(view.status, "WAITING", `the place was kept: ${JSON.stringify(view)}`);
    const heartbeats = requests.filter((r) => r.endsWith(":heartbeat")).length;
    assert.ok(heartbeats >= 2, `heartbeats sent: ${requests.join(", ")}`);
    // The cadence is the room's (1 s), not a busy loop: at most one per second plus the reads
    // near the front (position 0), one per second too.
    assert.ok(requests.length <= 2 * 5 + 2, `requests: ${requests.join(", ")}`);
    assert.equal(admitted, null);

    await leave(holder);
    const final = await followed;
    assert.equal(final.status, "ACTIVE");
    assert.ok(admitted, "onAdmitted was called");
    assert.equal(admitted.view.waitingRoomSessionId, person.id);
    assert.equal(typeof admitted.token, "string");
    assert.equal(admitted.token.split(".").length, 3);
    assert.deepEqual(positions, [0], "one onPosition for the one position it held");
  });

  test("follow, next in line, holds its reads between heartbeats and sees its turn the moment it comes", async () => {
    // Heartbeats a minute apart: only the reads between them can tell of the turn in time.
    const roomId = await room("js-front", { capacity: 1, heartbeatIntervalSeconds: 60 });
    const holder = await join(roomId, { baseUrl: node.url });
    const requests = [];
    const recording = (url, init) => {
      const { pathname, search } = new URL(url);
      requests.push(`${init.method} ${pathname}${search}`);
      return fetch(url, init);
    };
    const person = await join(roomId, { baseUrl: node.url, fetch: recording });
    assert.equal(person.view.position, 0);
    let admittedAt = null;
    const followed = follow(person, {
      onAdmitted: () => {
        admittedAt = Date.now();
      },
    });
    // While nothing changes, one read is held by the server: far fewer than one a second.
    const quietUntil = Date.now() + 3_000;
    await eventually("3 s pass", 10_000, () => Date.now() >= quietUntil);
    const reads = requests.filter((r) => r.startsWith("GET "));
    assert.ok(reads.length >= 1 && reads.length <= 2, `reads: ${requests.join(", ")}`);
    assert.ok(reads.every((r) => r.endsWith(`?waitSeconds=${LIMITS.heldReadMaxSeconds}`)), `reads: ${reads.join(", ")}`);
    assert.equal(admittedAt, null);

    const freedAt = Date.now();
    await leave(holder);
    const final = await followed;
    assert.equal(final.status, "ACTIVE");
    // Long before the next heartbeat (a minute), and before the held read's wait (8 s) ends.
    assert.ok(admittedAt - freedAt < 5_000, `admitted ${admittedAt - freedAt} ms after the slot was freed`);
  });

  test("follow holds its reads whenever the view says turnSoon, with no estimate yet", async () => {
    // Both slots were taken at once: the room expects two admissions soon, so the second in line
    // is marked turnSoon although nothing says yet how long people stay (no estimate) and it
    // has not moved (no progress of its own). Heartbeats a minute apart.
    const roomId = await room("js-turn-soon", { capacity: 2, heartbeatIntervalSeconds: 60 });
    const holders = [await join(roomId, { baseUrl: node.url }), await join(roomId, { baseUrl: node.url })];
    await join(roomId, { baseUrl: node.url });
    const requests = [];
    const recording = (url, init) => {
      const { pathname, search } = new URL(url);
      requests.push(`${init.method} ${pathname}${search}`);
      return fetch(url, init);
    };
    const person = await join(roomId, { baseUrl: node.url, fetch: recording });
    assert.equal(person.view.position, 1);
    assert.equal(person.view.turnSoon, true);
    assert.equal(person.view.estimatedWaitRange, null);
    let admittedAt = null;
    const followed = follow(person, {
      onAdmitted: () => {
        admittedAt = Date.now();
      },
    });
    await eventually("a held read", FOLLOW_WAIT_MS, () =>
      requests.some((r) => r.startsWith("GET ") && r.endsWith(`?waitSeconds=${LIMITS.heldReadMaxSeconds}`)),
    );
    await leave(holders[0]); // the one ahead is admitted
    const freedAt = Date.now();
    await leave(holders[1]); // this one's turn
    const final = await followed;
    assert.equal(final.status, "ACTIVE");
    assert.ok(admittedAt - freedAt < 5_000, `admitted ${admittedAt - freedAt} ms after the slot was freed`);
  });

  test("follow reads nothing between heartbeats while the view does not say turnSoon", async () => {
    const roomId = await room("js-not-soon", { capacity: 1, heartbeatIntervalSeconds: 60 });
    await join(roomId, { baseUrl: node.url });
    await join(roomId, { baseUrl: node.url });
    await join(roomId, { baseUrl: node.url });
    const requests = [];
    const recording = (url, init) => {
      const { pathname, search } = new URL(url);
      requests.push(`${init.method} ${pathname}${search}`);
      return fetch(url, init);
    };
    const person = await join(roomId, { baseUrl: node.url, fetch: recording });
    assert.equal(person.view.position, 2);
    assert.equal(person.view.turnSoon, false);
    const controller = new AbortController();
    const followed = follow(person, { signal: controller.signal }).catch((error) => error);
    const quietUntil = Date.now() + 3_000;
    await eventually("3 s pass", 10_000, () => Date.now() >= quietUntil);
    controller.abort();
    await followed;
    assert.deepEqual(requests.filter((r) => r.startsWith("GET ")), [], `requests: ${requests.join(", ")}`);
  });

  test("follow reports each position change until admission", async () => {
    const roomId = await room("js-positions", { capacity: 1 });
    const holder = await join(roomId, { baseUrl: node.url });
    const ahead = await join(roomId, { baseUrl: node.url });
    const person = await join(roomId, { baseUrl: node.url });
    assert.equal(person.view.position, 1);
    const positions = [];
    const followed = follow(person, { onPosition: (event) => positions.push(event.position) });
    await eventually("the first position event", FOLLOW_WAIT_MS, () => positions.length > 0);
    await leave(ahead); // 1 -> 0
    await eventually("position 0", FOLLOW_WAIT_MS, () => positions.includes(0));
    await leave(holder); // admitted
    const final = await followed;
    assert.equal(final.status, "ACTIVE");
    assert.deepEqual(positions, [1, 0]);
  });

  test("follow ends with the EXPIRED view when the session ends, and onExpired", async () => {
    const roomId = await room("js-expire", { capacity: 1 });
    await join(roomId, { baseUrl: node.url });
    const person = await join(roomId, { baseUrl: node.url });
    let expired = null;
    const followed = follow(person, { onExpired: (view) => (expired = view) });
    const left = await leave(person);
    assert.equal(left.status, "EXPIRED");
    assert.equal(left.expiredReason, "left");
    const final = await followed;
    assert.equal(final.status, "EXPIRED");
    assert.equal(final.expiredReason, "left");
    assert.equal(expired?.expiredReason, "left");
  });

  test("follow with keepAlive heartbeats an ACTIVE session and hands over renewed tokens", async () => {
    const roomId = await room("js-keepalive", { capacity: 1, activeIdleTimeoutSeconds: 3, heartbeatIntervalSeconds: 1 });
    const person = await join(roomId, { baseUrl: node.url });
    assert.equal(person.view.status, "ACTIVE");
    const controller = new AbortController();
    const tokens = [];
    let admittedToken = null;
    const followed = follow(person, {
      keepAlive: true,
      signal: controller.signal,
      onAdmitted: (event) => (admittedToken = event.token),
      onToken: (event) => tokens.push(event.token),
    });
    // Past the active idle timeout (3 s): alive only through the heartbeats; tokens are issued
    // per second, so each heartbeat a second apart brings a new one.
    await eventually("two renewed tokens", FOLLOW_WAIT_MS, () => tokens.length >= 2);
    const waitUntil = Date.now() + 3_500;
    await eventually("3.5 s pass", 10_000, () => Date.now() >= waitUntil);
    assert.equal((await resume(person.id, { baseUrl: node.url })).view.status, "ACTIVE");
    assert.equal(typeof admittedToken, "string");
    controller.abort();
    await assert.rejects(followed, { name: "AbortError" });
  });

  test("follow retries failures with bounded exponential backoff and still gets there", async () => {
    const roomId = await room("js-backoff", { capacity: 1 });
    const holder = await join(roomId, { baseUrl: node.url });
    // The first three requests after the join fail as a lost network would.
    let failuresLeft = 3;
    const flaky = (url, init) => {
      if (init.method !== "POST" || !String(url).endsWith("/sessions")) {
        if (failuresLeft > 0) {
          failuresLeft -= 1;
          return Promise.reject(new TypeError("fetch failed (injected)"));
        }
      }
      return fetch(url, init);
    };
    const person = await join(roomId, { baseUrl: node.url, fetch: flaky });
    const retries = [];
    const followed = follow(person, { onRetry: (event) => retries.push(event) });
    await eventually("three retries", FOLLOW_WAIT_MS, () => retries.length >= 2 && failuresLeft === 0);
    await leave(holder);
    const final = await followed;
    assert.equal(final.status, "ACTIVE");
    assert.ok(retries.length >= 2, `retries: ${retries.length}`);
    retries.forEach((retry, index) => {
      assert.equal(retry.attempt, index + 1);
      assert.equal(retry.error.status, 0);
      // Equal jitter: between half and all of base * 2^(attempt-1), never above the ceiling.
      const ceiling = Math.min(LIMITS.backoffMaxMs, LIMITS.backoffBaseMs * 2 ** index);
      assert.ok(retry.delayMs >= ceiling / 2 && retry.delayMs <= ceiling, `delay ${retry.delayMs} for attempt ${retry.attempt}`);
    });
  });

  test("follow can be cancelled with an AbortSignal", async () => {
    const roomId = await room("js-abort", { capacity: 1 });
    await join(roomId, { baseUrl: node.url });
    const person = await join(roomId, { baseUrl: node.url });
    const controller = new AbortController();
    const followed = follow(person, { signal: controller.signal });
    controller.abort();
    await assert.rejects(followed, { name: "AbortError" });
    // Cancelling following is not leaving: the place is still there.
    assert.equal((await resume(person.id, { baseUrl: node.url })).view.status, "WAITING");
  });
});

describe("@waitroom/client and the per-address join rate", { skip }, () => {
  let node;
  before(async () => {
    // One join a second, no burst beyond it: the second join in a second gets 429 Retry-After.
    node = await startWaitroom({ args: ["--join-rate-per-ip", "1", "--join-burst-per-ip", "1"] });
  });
  after(async () => {
    await node?.stop();
  });

  test("join waits out a 429's Retry-After and then gets its place", async () => {
    await node.putRoom("js-rate", { capacity: 10 });
    await join("js-rate", { baseUrl: node.url });
    const retries = [];
    const session = await join("js-rate", { baseUrl: node.url, onRetry: (event) => retries.push(event) });
    assert.match(session.id, /^wr_/);
    assert.ok(retries.length >= 1, "the first attempt was refused");
    assert.equal(retries[0].error.status, 429);
    assert.ok(retries[0].error.retryAfterMs >= 1000, `Retry-After: ${retries[0].error.retryAfterMs} ms`);
    assert.ok(retries[0].delayMs >= retries[0].error.retryAfterMs, "waited at least Retry-After");
  });
});

describe("the challenge solver", () => {
  const zeroBits = (digest) => {
    let bits = 0;
    for (const byte of digest) {
      if (byte !== 0) return bits + Math.clz32(byte) - 24;
      bits += 8;
    }
    return bits;
  };
  test("its solutions have the work, and agree with the waiting page's Web Worker", async () => {
    const require = createRequire(import.meta.url);
    const worker = require("../../../crates/waitroom/assets/challenge-worker.js");
    for (const length of [0, 5, 55, 56, 63, 64, 72, 100]) {
      const challenge = "c".repeat(length);
      const found = await solveChallenge(challenge, 10);
      const digest = createHash("sha256").update(challenge + found.solution).digest();
      assert.ok(zeroBits(digest) >= 10, `${length}: ${found.solution}`);
      assert.equal(found.solution, String(found.tries - 1));
      assert.deepEqual(worker.solve(challenge, 10, () => {}), found, `${length}`);
    }
  });
});
