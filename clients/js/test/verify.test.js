// @waitroom/node against a real waitroom node: tokens it issued verify; expired, tampered,
// other-room, other-issuer and unsigned ones do not; the JWKS is fetched once and cached; the
// Express middleware answers 401, 403 or lets the request through.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, request as httpRequest } from "node:http";
import { after, before, describe, test } from "node:test";

import express from "express";
import { follow, join, leave } from "@waitroom/client";
import { AdmissionError, LIMITS, requireAdmission, verifyAdmission } from "@waitroom/node";

import { eventually, missingWaitroom, startWaitroom } from "../testkit/waitroom.js";

const skip = missingWaitroom();
const LONG_IDLE_SECONDS = 600;

const base64url = (text) => Buffer.from(text).toString("base64url");
const claimsOf = (token) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());

/** An HTTP server on 127.0.0.1 that forwards every request to `target` and counts them. */
async function countingProxy(target) {
  const counts = { requests: 0 };
  const server = createServer((req, res) => {
    counts.requests += 1;
    const upstream = httpRequest(new URL(req.url, target), { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => {
      res.statusCode = 502;
      res.end();
    });
    req.pipe(upstream);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${server.address().port}`, counts, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** Serves `app` on 127.0.0.1; returns its URL and a close function. */
async function serve(app) {
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

describe("@waitroom/node against a real node", { skip }, () => {
  let node;
  /** A token of room A, and one of room B, both from sessions admitted by the node. */
  let tokenA;
  let sessionA;
  let tokenB;
  const roomA = "js-verify-a";
  const roomB = "js-verify-b";

  before(async () => {
    node = await startWaitroom({ args: ["--join-rate-per-ip", "0"] });
    for (const room of [roomA, roomB]) {
      await node.putRoom(room, { capacity: 5, activeIdleTimeoutSeconds: LONG_IDLE_SECONDS, waitingIdleTimeoutSeconds: LONG_IDLE_SECONDS });
    }
    const a = await join(roomA, { baseUrl: node.url });
    const admitted = await follow(a); // ACTIVE from the join: follow resolves at once
    tokenA = admitted.admissionToken;
    sessionA = a.id;
    tokenB = (await join(roomB, { baseUrl: node.url })).view.admissionToken;
    assert.equal(typeof tokenA, "string");
    assert.equal(typeof tokenB, "string");
  });
  after(async () => {
    await node?.stop();
  });

  test("a token the node issued verifies, and the claims are the session's", async () => {
    const claims = await verifyAdmission(tokenA, { jwksUrl: node.jwksUrl, room: roomA });
    assert.equal(claims.sub, sessionA);
    assert.equal(claims.aud, roomA);
    assert.equal(claims.iss, "waitroom");
    assert.ok(claims.exp > Date.now() / 1000);
    assert.equal(typeof claims.jti, "string");
  });

  test("a token of another room is refused as wrong-room (403)", async () => {
    await assert.rejects(verifyAdmission(tokenB, { jwksUrl: node.jwksUrl, room: roomA }), (error) => {
      assert.ok(error instanceof AdmissionError);
      assert.equal(error.code, "wrong-room");
      assert.equal(error.status, 403);
      return true;
    });
  });

  test("a tampered token is refused: claims changed, signature changed", async () => {
    const [header, payload, signature] = tokenA.split(".");
    // The payload of room B's token under room A's signature...
    const otherPayload = tokenB.split(".")[1];
    // ...and a payload edited to live an hour longer.
    const longer = base64url(JSON.stringify({ ...claimsOf(tokenA), exp: claimsOf(tokenA).exp + 3600 }));
    // ...and one flipped bit of the signature.
    const bytes = Buffer.from(signature, "base64url");
    bytes[0] ^= 1;
    for (const tampered of [`${header}.${otherPayload}.${signature}`, `${header}.${longer}.${signature}`, `${header}.${payload}.${bytes.toString("base64url")}`]) {
      await assert.rejects(verifyAdmission(tampered, { jwksUrl: node.jwksUrl, room: roomA }), (error) => {
        assert.ok(error instanceof AdmissionError, String(error));
        assert.equal(error.code, "bad-signature");
        assert.equal(error.status, 401);
        return true;
      });
    }
  });

  test("an unsigned token (alg none) and garbage are refused before any key is used", async () => {
    const unsigned = `${base64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${tokenA.split(".")[1]}.`;
    const hmac = `${base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${tokenA.split(".")[1]}.${tokenA.split(".")[2]}`;
    for (const bad of [unsigned, hmac, "not-a-token", "a.b.c", "x".repeat(LIMITS.tokenLengthMaxBytes + 1)]) {
      await assert.rejects(verifyAdmission(bad, { jwksUrl: node.jwksUrl, room: roomA }), (error) => {
        assert.ok(error instanceof AdmissionError, String(error));
        assert.ok(["malformed", "bad-signature"].includes(error.code), error.code);
        assert.equal(error.status, 401);
        return true;
      });
    }
    await assert.rejects(verifyAdmission("", { jwksUrl: node.jwksUrl, room: roomA }), { code: "missing" });
  });

  test("a token of another issuer is refused", async () => {
    await assert.rejects(verifyAdmission(tokenA, { jwksUrl: node.jwksUrl, room: roomA, issuer: "https://queue.example.com" }), {
      code: "wrong-issuer",
      status: 401,
    });
  });

  test("an expired token is refused (a room whose sessions live 1 s once admitted)", async () => {
    // maxActiveSeconds 1: a token's exp is the earlier of the session's expiresAt (admission
    // + 1 s) and 5 minutes after issue.
    const room = "js-verify-short";
    await node.putRoom(room, { capacity: 5, maxActiveSeconds: 1, activeIdleTimeoutSeconds: 2, heartbeatIntervalSeconds: 1 });
    const token = (await join(room, { baseUrl: node.url })).view.admissionToken;
    const { exp } = claimsOf(token);
    assert.ok(exp <= Date.now() / 1000 + 2, `exp ${exp} is within the session's second`);
    await eventually("the token's exp passes", 10_000, () => Date.now() / 1000 >= exp + 0.1);
    await assert.rejects(verifyAdmission(token, { jwksUrl: node.jwksUrl, room }), (error) => {
      assert.equal(error.code, "expired");
      assert.equal(error.status, 401);
      return true;
    });
    // A clock tolerance accepts it again for a while (and is bounded).
    const claims = await verifyAdmission(token, { jwksUrl: node.jwksUrl, room, clockToleranceSeconds: 30 });
    assert.equal(claims.aud, room);
  });

  test("the JWKS is fetched once and cached across verifications", async () => {
    const proxy = await countingProxy(node.url);
    try {
      const jwksUrl = `${proxy.url}/.well-known/jwks.json`;
      for (let i = 0; i < 5; i += 1) await verifyAdmission(tokenA, { jwksUrl, room: roomA });
      await assert.rejects(verifyAdmission(tokenB, { jwksUrl, room: roomA }), { code: "wrong-room" });
      assert.equal(proxy.counts.requests, 1);
    } finally {
      await proxy.close();
    }
  });

  test("a node that cannot be reached is jwks-unavailable (503), not an invalid token", async () => {
    const proxy = await countingProxy(node.url);
    const jwksUrl = `${proxy.url}/.well-known/jwks.json`;
    await proxy.close(); // nothing listens there now
    await assert.rejects(verifyAdmission(tokenA, { jwksUrl, room: roomA }), { code: "jwks-unavailable", status: 503 });
  });

  test("bad options are a TypeError, not a refused token", async () => {
    await assert.rejects(verifyAdmission(tokenA, { jwksUrl: "not a url", room: roomA }), TypeError);
    await assert.rejects(verifyAdmission(tokenA, { jwksUrl: node.jwksUrl, room: "no room!" }), TypeError);
    assert.throws(() => requireAdmission({ jwksUrl: node.jwksUrl }), TypeError);
  });

  describe("the Express middleware", () => {
    let app;
    before(async () => {
      const service = express();
      service.get("/seats", requireAdmission({ jwksUrl: node.jwksUrl, room: roomA }), (req, res) => {
        res.json({ session: req.admission.sub, locals: res.locals.admission.sub });
      });
      app = await serve(service);
    });
    after(async () => {
      await app?.close();
    });

    const get = async (path, headers = {}) => {
      const response = await fetch(app.url + path, { headers });
      const text = await response.text();
      return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
    };
    const assertProblem = (answer, status) => {
      assert.equal(answer.status, status);
      assert.equal(answer.headers.get("content-type"), "application/problem+json");
      assert.equal(answer.body.status, status);
      assert.equal(typeof answer.body.detail, "string");
    };

    test("no token: 401 problem with WWW-Authenticate: Bearer", async () => {
      const answer = await get("/seats");
      assertProblem(answer, 401);
      assert.equal(answer.headers.get("www-authenticate"), "Bearer");
      assert.match(answer.body.detail, /waitroomToken/);
    });

    test("a valid token passes, from the header, the query parameter or the cookie", async () => {
      for (const [path, headers] of [
        ["/seats", { Authorization: `Bearer ${tokenA}` }],
        [`/seats?waitroomToken=${tokenA}`, {}],
        ["/seats", { Cookie: `theme=dark; waitroomToken=${tokenA}` }],
      ]) {
        const answer = await get(path, headers);
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.deepEqual(answer.body, { session: sessionA, locals: sessionA });
      }
    });

    test("a node whose key set cannot be read: 503 with Retry-After, not a 401", async () => {
      const proxy = await countingProxy(node.url);
      const jwksUrl = `${proxy.url}/.well-known/jwks.json`;
      await proxy.close(); // nothing listens there now
      const service = express();
      service.get("/seats", requireAdmission({ jwksUrl, room: roomA }), (req, res) => res.json({ ok: true }));
      const unreachable = await serve(service);
      try {
        const response = await fetch(`${unreachable.url}/seats`, { headers: { Authorization: `Bearer ${tokenA}` } });
        assert.equal(response.status, 503);
        assert.equal(response.headers.get("retry-after"), String(LIMITS.jwksUnavailableRetryAfterSeconds));
        assert.equal(response.headers.get("content-type"), "application/problem+json");
      } finally {
        await unreachable.close();
      }
    });

    test("a tampered or expired token: 401 invalid_token; another room's token: 403", async () => {
      const [header, , signature] = tokenA.split(".");
      const tampered = `${header}.${tokenB.split(".")[1]}.${signature}`;
      const invalid = await get("/seats", { Authorization: `Bearer ${tampered}` });
      assertProblem(invalid, 401);
      assert.equal(invalid.headers.get("www-authenticate"), 'Bearer error="invalid_token"');

      const room = "js-verify-mw-short";
      await node.putRoom(room, { capacity: 5, maxActiveSeconds: 1, activeIdleTimeoutSeconds: 2, heartbeatIntervalSeconds: 1 });
      const session = await join(room, { baseUrl: node.url });
      const { exp } = claimsOf(session.view.admissionToken);
      const service = express();
      service.get("/seats", requireAdmission({ jwksUrl: node.jwksUrl, room }), (req, res) => res.json({ ok: true }));
      const short = await serve(service);
      try {
        const fresh = await fetch(`${short.url}/seats`, { headers: { Authorization: `Bearer ${session.view.admissionToken}` } });
        assert.equal(fresh.status, 200);
        await eventually("the token's exp passes", 10_000, () => Date.now() / 1000 >= exp + 0.1);
        const expired = await fetch(`${short.url}/seats`, { headers: { Authorization: `Bearer ${session.view.admissionToken}` } });
        assert.equal(expired.status, 401);
        assert.match((await expired.json()).detail, /expired/);
      } finally {
        await short.close();
        await leave(session);
      }

      const forbidden = await get("/seats", { Authorization: `Bearer ${tokenB}` });
      assertProblem(forbidden, 403);
      assert.match(forbidden.body.detail, /js-verify-b/);
    });
  });
});
