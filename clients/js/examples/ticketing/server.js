// A ticket shop in front of a waitroom node: a custom waiting page built with @waitroom/client,
// and a seat-selection page that only admitted people reach (@waitroom/node's middleware).
//
//   WAITROOM_URL=http://127.0.0.1:8080 ROOM=demo PORT=3000 node examples/ticketing/server.js
//
// then open http://127.0.0.1:3000/queue/. The room's `targetUrl` must be this shop's /seats
// (http://127.0.0.1:3000/seats here): the page sends the person there with the token.
//
// The waitroom node sends no CORS headers, so a page on another origin cannot call it. Here the
// shop serves the page and forwards the waiting-room API (/api/waiting-room/ and the JWKS) to
// the node, so page and API share an origin, as a reverse proxy (nginx, a CDN) would do it.

import { readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { fileURLToPath } from "node:url";

import express from "express";
import { requireAdmission } from "@waitroom/node";

const PUBLIC_DIR = fileURLToPath(new URL("./public/", import.meta.url));
// What a bundler would otherwise resolve: the page imports "@waitroom/client" through an import
// map that points here.
const CLIENT_FILE = fileURLToPath(new URL("../../packages/client/src/index.js", import.meta.url));
/** Longest wait for the node's answer to a forwarded request (its own waits are 5 s at most). */
const UPSTREAM_TIMEOUT_MS = 15_000;
/** Forwarded request bodies are cut at the node's own limit (4096 bytes) plus room to see it. */
const FORWARDED_BODY_MAX_BYTES = 8 * 1024;

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Forwards the request to the node as it came (method, path, query, headers, body). */
function forwardTo(waitroomUrl) {
  const upstreamBase = new URL(waitroomUrl);
  const send = upstreamBase.protocol === "https:" ? httpsRequest : httpRequest;
  return (req, res) => {
    const target = new URL(req.originalUrl, upstreamBase);
    const headers = { ...req.headers, host: target.host };
    // The node limits joins per client address: tell it whose they are (start it with
    // --client-ip-header X-Forwarded-For when it sits behind this shop).
    headers["x-forwarded-for"] = req.socket.remoteAddress;
    const upstream = send(target, { method: req.method, headers, timeout: UPSTREAM_TIMEOUT_MS }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    upstream.on("timeout", () => upstream.destroy(new Error("the waitroom node did not answer in time")));
    upstream.on("error", () => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(502, { "Content-Type": "application/problem+json", "Cache-Control": "no-store", "Retry-After": "2" });
      res.end(JSON.stringify({ type: "about:blank", title: "Bad Gateway", status: 502, detail: "the waiting room cannot be reached" }));
    });
    let received = 0;
    req.on("data", (chunk) => {
      received += chunk.length;
      if (received > FORWARDED_BODY_MAX_BYTES) {
        upstream.destroy();
        req.destroy();
        return;
      }
      upstream.write(chunk);
    });
    req.on("end", () => upstream.end());
  };
}

/**
 * The shop: `waitroomUrl` is the node's origin, `room` the room people queue for, `issuer` the
 * node's --issuer (default "waitroom").
 */
export function createApp({ waitroomUrl, room, issuer }) {
  const app = express();
  app.disable("x-powered-by");

  const forward = forwardTo(waitroomUrl);
  app.use("/api/waiting-room", forward);
  app.get("/.well-known/jwks.json", forward);

  app.get("/", (req, res) => res.redirect(`/queue/?room=${encodeURIComponent(room)}`));
  app.get("/lib/waitroom-client.js", async (req, res, next) => {
    try {
      res.type("text/javascript").set("Cache-Control", "no-cache").send(await readFile(CLIENT_FILE, "utf8"));
    } catch (error) {
      next(error);
    }
  });
  app.use("/queue", express.static(PUBLIC_DIR, { index: "index.html" }));

  // Only admitted people get here: the page sends them with ?waitroomToken=…; the token is
  // checked against the node's key set (fetched once, cached) and must be for this room.
  app.get(
    "/seats",
    requireAdmission({ jwksUrl: new URL("/.well-known/jwks.json", waitroomUrl).href, room, issuer }),
    (req, res) => {
      const { sub, exp } = req.admission;
      res.set("Cache-Control", "no-store").type("html").send(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pick your seats</title></head>
<body data-state="admitted" data-session="${escapeHtml(sub)}">
<main><h1 id="heading">You're in: pick your seats</h1>
<p>Your admission (session <code>${escapeHtml(sub)}</code>) is valid until ${escapeHtml(new Date(exp * 1000).toISOString())}.</p></main>
</body></html>`);
    },
  );
  return app;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const waitroomUrl = process.env.WAITROOM_URL || "http://127.0.0.1:8080";
  const room = process.env.ROOM || "demo";
  const port = Number(process.env.PORT || 3000);
  createApp({ waitroomUrl, room, issuer: process.env.WAITROOM_ISSUER })
    .listen(port, "127.0.0.1", () => {
      console.log(`ticket shop at http://127.0.0.1:${port}/ (room ${room}, waitroom ${waitroomUrl})`);
    });
}
