// @waitroom/client: join a waitroom line, follow it to admission, leave it.
//
// For custom waiting pages, mobile web and Node (18+): it needs only `fetch`, `AbortController`,
// `setTimeout` and `crypto.getRandomValues`, and has no dependencies. The HTTP API it speaks is
// docs/api.md of the waitroom repository.
//
// The node has no CORS: serve the page from the node's origin, or put the node's
// `/api/waiting-room/` path behind the same origin as the page (a reverse proxy), and leave
// `baseUrl` empty or set it to that origin.

/** Every limit of the client, with its unit. One place; nothing else hard-codes these. */
export const LIMITS = Object.freeze({
  /** A request unanswered after this long is a network error (and is retried). */
  requestTimeoutMs: 15_000,
  /** First retry delay of our own; doubles per consecutive failure. */
  backoffBaseMs: 1_000,
  /** Longest retry delay of our own: well under the default waiting idle timeout (120 s), so a
   *  place survives a short outage. */
  backoffMaxMs: 30_000,
  /** A `Retry-After` longer than this is cut to it (a misconfigured proxy must not park us). */
  retryAfterMaxMs: 300_000,
  /** Consecutive failures (about 20 minutes of them at the backoff ceiling) before `follow`
   *  gives up and rejects. */
  followAttemptsMax: 40,
  /** Challenges a join solves in a row at most (each refused one is replaced by a new one). */
  challengeRoundsMax: 3,
  /** A challenge's solver yields to the event loop every this many hashes (a few ms). */
  challengeYieldTries: 65536,
  /** Attempts of a join (the first and its retries) before `join` rejects. */
  joinAttemptsMax: 6,
  /** Attempts of a leave before `leave` rejects: leaving is a person's action, they are told. */
  leaveAttemptsMax: 3,
  /** The server's `heartbeatIntervalSeconds` is clamped to this range; a view without a usable
   *  one uses the default. */
  heartbeatMinSeconds: 1,
  heartbeatMaxSeconds: 300,
  heartbeatDefaultSeconds: 10,
  /** Near the front of the line (the view says `turnSoon`: the server expects the turn within 1.5
   *  heartbeat intervals) the status is also read between heartbeats, and the server is asked to hold each read until
   *  the turn comes or this many seconds pass (`?waitSeconds=`, at most 8: the API's bound), so
   *  admission is seen the moment it happens, with one read per wait. A read writes nothing. */
  heldReadMaxSeconds: 8,
  /** "Near the front" for a server that predates `turnSoon`: a turn expected within this many
   *  heartbeat intervals (an estimate up to twice too long still starts the held reads before the
   *  turn comes). */
  nearFrontHeartbeats: 2,
  /** ...and reads begin at least this far apart: a server that holds no more reads answers at
   *  once, and reads then come once a second. */
  frontCheckIntervalMs: 1_000,
  /** Problem titles and details longer than this are cut. */
  problemTextMaxChars: 500,
});

const SESSIONS_PATH = "/api/waiting-room/sessions";
const ROOMS_PATH = "/api/waiting-room/rooms";
const SESSION_ID_PATTERN = /^wr_[A-Za-z0-9_-]{1,125}$/;
const ROOM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const STATUSES = new Set(["WAITING", "ACTIVE", "EXPIRED"]);

/**
 * An answer that was not a session view: an HTTP error (with the problem's fields), a network
 * error or timeout (`status` 0), or an answer that was not what the API promises (`status` 0).
 */
export class WaitroomError extends Error {
  constructor(message, { status = 0, type = null, title = null, detail = null, retryAfterMs = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "WaitroomError";
    /** HTTP status, or 0 when no usable answer arrived. */
    this.status = status;
    /** The problem's kind: the last segment of its `type` (`room-full`, `unknown-room`, ...). */
    this.type = type;
    this.title = title;
    this.detail = detail;
    /** From `Retry-After`, in milliseconds, when the answer had one. */
    this.retryAfterMs = retryAfterMs;
  }

  /** Whether trying again later may succeed: no answer, 408, 429 or a 5xx. */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** Thrown (rejected with) when the caller's AbortSignal fires. */
function abortError(signal) {
  if (signal && signal.reason instanceof Error) return signal.reason;
  const error = new Error("the operation was aborted");
  error.name = "AbortError";
  return error;
}

function baseOf(baseUrl) {
  if (baseUrl === undefined || baseUrl === null || baseUrl === "") return "";
  if (typeof baseUrl !== "string") throw new TypeError("baseUrl must be a string (an origin such as https://queue.example.com)");
  return baseUrl.replace(/\/+$/, "");
}

function parseRetryAfter(value) {
  if (!value) return null;
  const trimmed = value.trim();
  const ms = /^\d+$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - Date.now();
  if (!Number.isFinite(ms)) return null;
  return Math.min(Math.max(ms, 0), LIMITS.retryAfterMaxMs);
}

function cut(text) {
  return typeof text === "string" ? text.slice(0, LIMITS.problemTextMaxChars) : null;
}

function isView(data) {
  return (
    data !== null &&
    typeof data === "object" &&
    typeof data.waitingRoomSessionId === "string" &&
    SESSION_ID_PATTERN.test(data.waitingRoomSessionId) &&
    STATUSES.has(data.status)
  );
}

/** One request to the API: the session view of a 2xx, or a WaitroomError. */
async function request(fetchImpl, method, url, { body, headers, signal, isAnswer = isView } = {}) {
  if (signal && signal.aborted) throw abortError(signal);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), LIMITS.requestTimeoutMs);
  const onAbort = () => controller.abort();
  if (signal) signal.addEventListener("abort", onAbort, { once: true });
  try {
    let response;
    try {
      response = await fetchImpl(url, {
        method,
        headers: Object.assign(
          { Accept: "application/json, application/problem+json" },
          body === undefined ? {} : { "Content-Type": "application/json" },
          headers || {},
        ),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (cause) {
      if (signal && signal.aborted) throw abortError(signal);
      throw new WaitroomError(`${method} ${url}: no answer (${cause && cause.message ? cause.message : cause})`, { cause });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (cause) {
      if (signal && signal.aborted) throw abortError(signal);
      data = null; // an empty or non-JSON body (a proxy's error page, a cut connection)
    }
    if (response.ok) {
      if (!isAnswer(data)) throw new WaitroomError(`${method} ${url}: the answer is not a session view`);
      return data;
    }
    const problem = data !== null && typeof data === "object" ? data : {};
    const type = typeof problem.type === "string" ? cut(problem.type.slice(problem.type.lastIndexOf("/") + 1)) : null;
    const title = cut(problem.title);
    const detail = cut(problem.detail);
    throw new WaitroomError(`${method} ${url}: ${response.status}${title ? ` ${title}` : ""}${detail ? `: ${detail}` : ""}`, {
      status: response.status,
      type,
      title,
      detail,
      retryAfterMs: parseRetryAfter(response.headers.get("Retry-After")),
    });
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", onAbort);
  }
}

/**
 * The delay before retry number `attempt` (1-based) after `error`: the server's Retry-After when
 * it gave one, plus a little jitter; else "equal jitter" exponential backoff (half the ceiling
 * plus a random half, so clients that failed together do not retry together).
 */
export function retryDelayMs(attempt, error) {
  if (error && typeof error.retryAfterMs === "number") {
    return error.retryAfterMs + Math.random() * Math.min(error.retryAfterMs * 0.2 + 250, 5_000);
  }
  const ceiling = Math.min(LIMITS.backoffMaxMs, LIMITS.backoffBaseMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 16));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/** Resolves after `ms`, or rejects at once when `signal` fires. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function withRetry(operation, { attemptsMax, signal, onRetry }) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await operation();
    } catch (error) {
      if (!(error instanceof WaitroomError) || !error.retryable || attempt >= attemptsMax) throw error;
      const delayMs = retryDelayMs(attempt, error);
      if (onRetry) onRetry({ error, attempt, delayMs });
      await sleep(delayMs, signal);
    }
  }
}

/** 128 random bits as 32 hex digits: an Idempotency-Key (as secret as the session id). */
export function newIdempotencyKey() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function pickFetch(options) {
  const fetchImpl = options.fetch || globalThis.fetch;
  if (typeof fetchImpl !== "function") throw new TypeError("no fetch: pass options.fetch");
  // A bare `window.fetch` reference must be called on the window.
  return options.fetch ? fetchImpl : (...args) => globalThis.fetch(...args);
}

function sessionFrom(view, baseUrl, fetchImpl, idempotencyKey) {
  return {
    id: view.waitingRoomSessionId,
    roomId: view.roomId,
    baseUrl,
    idempotencyKey,
    view,
    fetch: fetchImpl,
  };
}

/**
 * Joins `roomId`'s line. Retries what may succeed later (no answer, 429, 503) with the same
 * Idempotency-Key, so a retry gets the place a lost attempt took, honouring Retry-After.
 */
export async function join(roomId, options = {}) {
  if (typeof roomId !== "string" || !ROOM_ID_PATTERN.test(roomId)) {
    throw new TypeError(`not a room id: ${JSON.stringify(roomId)} (letters, digits, '.', '_', '-'; at most 64)`);
  }
  const baseUrl = baseOf(options.baseUrl);
  const fetchImpl = pickFetch(options);
  const idempotencyKey = options.idempotencyKey || newIdempotencyKey();
  const attemptsMax = Math.max(1, Math.min(options.attemptsMax || LIMITS.joinAttemptsMax, LIMITS.followAttemptsMax));
  // A room may ask every join to solve a challenge (docs/api.md, "Challenges"): the join says
  // so (403 `challenge-…`); get one, solve it, join again with it. A challenge refused for
  // another reason (expired, another key, the difficulty raised) is replaced, a few times at most.
  let solved = null;
  for (let round = 0; ; round += 1) {
    try {
      const view = await withRetry(
        () =>
          request(fetchImpl, "POST", baseUrl + SESSIONS_PATH, {
            body: Object.assign({ roomId }, solved || {}),
            headers: { "Idempotency-Key": idempotencyKey },
            signal: options.signal,
          }),
        { attemptsMax, signal: options.signal, onRetry: options.onRetry },
      );
      return sessionFrom(view, baseUrl, fetchImpl, idempotencyKey);
    } catch (error) {
      const challenged = error instanceof WaitroomError && error.status === 403 && /^challenge-/.test(error.type || "");
      if (!challenged || round >= LIMITS.challengeRoundsMax) throw error;
      solved = await solveRoomChallenge(fetchImpl, baseUrl, roomId, { attemptsMax, ...options });
    }
  }
}

/** Gets a challenge for `roomId` and solves it: the join body's `{challenge, solution}` (null when
 *  the room no longer asks for one). */
async function solveRoomChallenge(fetchImpl, baseUrl, roomId, options) {
  let issued;
  try {
    issued = await withRetry(
      () =>
        request(fetchImpl, "POST", `${baseUrl}${ROOMS_PATH}/${encodeURIComponent(roomId)}/challenge`, {
          signal: options.signal,
          isAnswer: (data) =>
            data !== null && typeof data === "object" && typeof data.challenge === "string" && Number.isInteger(data.difficultyBits),
        }),
      { attemptsMax: options.attemptsMax, signal: options.signal, onRetry: options.onRetry },
    );
  } catch (error) {
    // The room stopped asking for one meanwhile: join without.
    if (error instanceof WaitroomError && error.type === "challenge-not-required") return null;
    throw error;
  }
  if (options.onChallenge) options.onChallenge({ difficultyBits: issued.difficultyBits, expiresAt: issued.expiresAt });
  const found = await solveChallenge(issued.challenge, issued.difficultyBits, {
    yieldTries: LIMITS.challengeYieldTries,
    signal: options.signal,
  });
  return { challenge: issued.challenge, solution: found.solution };
}

/**
 * A session to follow from its id alone (a page reloaded with the id in its storage). The view
 * is read once, so an unknown or forgotten session fails here.
 */
export async function resume(sessionId, options = {}) {
  if (typeof sessionId !== "string" || !SESSION_ID_PATTERN.test(sessionId)) {
    throw new TypeError(`not a session id: ${JSON.stringify(sessionId)}`);
  }
  const baseUrl = baseOf(options.baseUrl);
  const fetchImpl = pickFetch(options);
  const view = await withRetry(() => request(fetchImpl, "GET", `${baseUrl}${SESSIONS_PATH}/${sessionId}`, { signal: options.signal }), {
    attemptsMax: LIMITS.joinAttemptsMax,
    signal: options.signal,
    onRetry: options.onRetry,
  });
  return sessionFrom(view, baseUrl, fetchImpl, null);
}

function heartbeatIntervalMs(view) {
  const seconds = Number(view && view.heartbeatIntervalSeconds);
  const usable = Number.isFinite(seconds) && seconds > 0 ? seconds : LIMITS.heartbeatDefaultSeconds;
  return Math.min(Math.max(usable, LIMITS.heartbeatMinSeconds), LIMITS.heartbeatMaxSeconds) * 1000;
}

/**
 * The server's `turnSoon` (the room's own judgement: its turn may come within 1.5 heartbeat
 * intervals; the server holds reads for these sessions only). A server that predates it: next in
 * line, or a turn expected within `LIMITS.nearFrontHeartbeats` heartbeat intervals, by the
 * server's estimate, or by the session's own progress since `progress` (its first position and
 * when it was seen) when the estimate is missing or too long.
 */
function isNearFront(view, progress) {
  if (view.status !== "WAITING" || view.prequeue === true) return false;
  if (typeof view.turnSoon === "boolean") return view.turnSoon;
  if (view.position === 0) return true;
  const horizonMs = LIMITS.nearFrontHeartbeats * heartbeatIntervalMs(view);
  const eta = view.estimatedWaitSeconds;
  if (Number.isInteger(eta) && eta * 1000 < horizonMs) return true;
  // A range: the turn may come as early as its low end.
  const low = view.estimatedWaitRange ? view.estimatedWaitRange.lowSeconds : null;
  if (Number.isInteger(low) && low * 1000 < horizonMs) return true;
  if (!progress || !Number.isInteger(view.position)) return false;
  const moved = progress.position - view.position;
  return moved > 0 && (view.position * (Date.now() - progress.at)) / moved < horizonMs;
}

/** Two `estimatedWaitRange` values (an object, null or absent) say the same. */
function sameRange(a, b) {
  if (!a || !b) return !a === !b;
  return a.lowSeconds === b.lowSeconds && a.highSeconds === b.highSeconds;
}

function checkSession(session) {
  if (!session || typeof session.id !== "string" || !SESSION_ID_PATTERN.test(session.id)) {
    throw new TypeError("pass the session that join() or resume() returned");
  }
}

/**
 * Follows a session: heartbeats it every `heartbeatIntervalSeconds` of its room (each heartbeat
 * answers the view), reads its status between heartbeats while it is near the front (held by the
 * server until the turn comes, `?waitSeconds=`), retries failures with bounded exponential backoff (Retry-After first), and calls:
 *
 * - `onUpdate(view)` on every view;
 * - `onPosition({position, waitingCount, estimatedWaitSeconds, prequeue, view})` when one of
 *   those changes while WAITING (and for the first view);
 * - `onAdmitted({token, targetUrl, view})` once, when the session turns ACTIVE;
 * - `onToken({token, view})` with each new token while ACTIVE (only with `keepAlive: true`);
 * - `onExpired(view)` when the session ends (EXPIRED, with `expiredReason`);
 * - `onRetry({error, attempt, delayMs})` before each retry.
 *
 * Resolves with the last view: the ACTIVE one at admission (by default), or the EXPIRED one.
 * With `keepAlive: true` it keeps heartbeating an ACTIVE session (each heartbeat renews its
 * token; see onToken) until it ends or `signal` fires. Rejects with the AbortSignal's reason
 * when `signal` fires, or with a WaitroomError that retrying cannot fix (the session is unknown
 * to the node, or failures went on for `LIMITS.followAttemptsMax` attempts).
 */
export async function follow(session, options = {}) {
  checkSession(session);
  const { signal } = options;
  const keepAlive = options.keepAlive === true;
  const url = `${session.baseUrl}${SESSIONS_PATH}/${session.id}`;
  const fetchImpl = session.fetch || pickFetch({});
  const emit = (name, event) => {
    if (typeof options[name] === "function") options[name](event);
  };

  let last = null; // the last view handed to the callbacks
  let admittedSeen = false;
  let lastToken = null;

  const handle = (view) => {
    session.view = view;
    const previous = last;
    last = view;
    emit("onUpdate", view);
    if (view.status === "WAITING") {
      const changed =
        previous === null ||
        previous.status !== "WAITING" ||
        previous.position !== view.position ||
        previous.waitingCount !== view.waitingCount ||
        previous.estimatedWaitSeconds !== view.estimatedWaitSeconds ||
        !sameRange(previous.estimatedWaitRange, view.estimatedWaitRange) ||
        previous.prequeue !== view.prequeue;
      if (changed) {
        emit("onPosition", {
          position: view.position,
          waitingCount: view.waitingCount,
          estimatedWaitSeconds: view.estimatedWaitSeconds,
          estimatedWaitRange: view.estimatedWaitRange || null,
          prequeue: view.prequeue,
          view,
        });
      }
    } else if (view.status === "ACTIVE") {
      if (!admittedSeen) {
        admittedSeen = true;
        lastToken = view.admissionToken;
        emit("onAdmitted", { token: view.admissionToken, targetUrl: view.targetUrl, view });
      } else if (view.admissionToken !== lastToken) {
        lastToken = view.admissionToken;
        emit("onToken", { token: view.admissionToken, view });
      }
    } else {
      emit("onExpired", view);
    }
  };

  const done = (view) => view.status === "EXPIRED" || (view.status === "ACTIVE" && !keepAlive);

  // The view we already hold counts: a join may answer ACTIVE at once.
  let view = session.view && isView(session.view) ? session.view : await request(fetchImpl, "GET", url, { signal });
  handle(view);
  if (done(view)) return view;

  let failures = 0;
  let nextHeartbeatAt = Date.now() + heartbeatIntervalMs(view);
  let lastReadAt = 0; // when the last read between heartbeats began
  // The first place seen, and when (see isNearFront).
  let progress = Number.isInteger(view.position) ? { position: view.position, at: Date.now() } : null;
  for (;;) {
    const now = Date.now();
    let delayMs;
    let heartbeat;
    let waitSeconds = 0;
    const readAt = Math.max(now, lastReadAt + LIMITS.frontCheckIntervalMs);
    if (failures > 0) {
      delayMs = 0; // the backoff was slept in the catch below; try the heartbeat again now
      heartbeat = true;
    } else if (isNearFront(view, progress) && nextHeartbeatAt - readAt >= 1_000) {
      // A held read, ending before the next heartbeat is due.
      delayMs = readAt - now;
      heartbeat = false;
      waitSeconds = Math.min(LIMITS.heldReadMaxSeconds, Math.floor((nextHeartbeatAt - readAt) / 1_000));
    } else {
      delayMs = nextHeartbeatAt - now;
      heartbeat = true;
    }
    await sleep(delayMs, signal);
    try {
      if (!heartbeat) lastReadAt = Date.now();
      view = heartbeat
        ? await request(fetchImpl, "POST", `${url}:heartbeat`, { signal })
        : await request(fetchImpl, "GET", `${url}?waitSeconds=${waitSeconds}`, { signal });
      failures = 0;
      if (heartbeat) nextHeartbeatAt = Date.now() + heartbeatIntervalMs(view);
    } catch (error) {
      if (!(error instanceof WaitroomError)) throw error; // aborted, or a bug of ours
      // A read between heartbeats that failed is simply skipped: the heartbeat reports.
      if (!heartbeat && error.retryable) continue;
      failures += 1;
      if (!error.retryable || failures >= LIMITS.followAttemptsMax) throw error;
      const delay = retryDelayMs(failures, error);
      emit("onRetry", { error, attempt: failures, delayMs: delay });
      await sleep(delay, signal);
      continue;
    }
    if (view.waitingRoomSessionId !== session.id) throw new WaitroomError(`${url}: the answer is another session's view`);
    if (view.status === "WAITING" && Number.isInteger(view.position) && (!progress || view.position > progress.position)) {
      progress = { position: view.position, at: Date.now() };
    }
    handle(view);
    if (done(view)) return view;
  }
}

/**
 * Leaves: gives up the place (or the slot, once ACTIVE) so the next person goes ahead. Idempotent
 * on the server; answers the ended view (`expiredReason: "left"`, or the reason it had already
 * ended with). Retries a few times, then rejects.
 */
export async function leave(session, options = {}) {
  checkSession(session);
  const fetchImpl = session.fetch || pickFetch({});
  const view = await withRetry(
    () => request(fetchImpl, "DELETE", `${session.baseUrl}${SESSIONS_PATH}/${session.id}`, { signal: options.signal }),
    { attemptsMax: LIMITS.leaveAttemptsMax, signal: options.signal, onRetry: options.onRetry },
  );
  session.view = view;
  return view;
}

// ---------------------------------------------------------------------------
// The proof of work of a room's join challenge (docs/api.md, "Challenges"): the first decimal
// counter whose SHA-256(challenge ‖ counter) starts with the room's difficulty in zero bits.
//
// The same SHA-256 as the waiting page's Web Worker (crates/waitroom/assets/challenge-worker.js;
// a test checks they agree): written out rather than crypto.subtle.digest, which is one promise
// per hash, where a million hashes are needed; the challenge's first 64 bytes are hashed once and
// each try costs one block. It yields to the event loop every `LIMITS.challengeYieldTries` tries
// so a page that calls it on its main thread still paints (a Web Worker is better there: the
// waiting page uses one).

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const W = new Uint32Array(64);

/** One SHA-256 compression of the 64 bytes at `block[offset..]` into `state` (8 words). */
function compress(state, block, offset) {
  for (let i = 0; i < 16; i++) {
    const j = offset + 4 * i;
    W[i] = (block[j] << 24) | (block[j + 1] << 16) | (block[j + 2] << 8) | block[j + 3];
  }
  for (let i = 16; i < 64; i++) {
    const a = W[i - 15], b = W[i - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = state[0], b = state[1], c = state[2], d = state[3];
  let e = state[4], f = state[5], g = state[6], h = state[7];
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  state[0] = (state[0] + a) | 0; state[1] = (state[1] + b) | 0;
  state[2] = (state[2] + c) | 0; state[3] = (state[3] + d) | 0;
  state[4] = (state[4] + e) | 0; state[5] = (state[5] + f) | 0;
  state[6] = (state[6] + g) | 0; state[7] = (state[7] + h) | 0;
}

const INITIAL = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/** Leading zero bits of a digest's first words. */
function zeroBits(state) {
  let bits = 0;
  for (let i = 0; i < 8; i++) {
    if (state[i] !== 0) return bits + Math.clz32(state[i]);
    bits += 32;
  }
  return bits;
}

/**
 * Solves `challenge` (ASCII) at `bits`: `{solution, tries}`. Calls `onProgress(tries)` at every
 * yield; rejects when `signal` fires.
 */
export async function solveChallenge(challenge, bits, { yieldTries = 1 << 16, signal, onProgress } = {}) {
  const full = challenge.length - (challenge.length % 64);
  const mid = new Int32Array(INITIAL);
  const bytes = new Uint8Array(challenge.length);
  for (let i = 0; i < challenge.length; i++) bytes[i] = challenge.charCodeAt(i) & 0xff;
  for (let at = 0; at < full; at += 64) compress(mid, bytes, at);
  const rest = challenge.length - full;
  const tail = new Uint8Array(128);
  tail.set(bytes.subarray(full), 0);
  const state = new Int32Array(8);
  const digits = new Uint8Array(20);
  for (let n = 0; n < Number.MAX_SAFE_INTEGER; n++) {
    let count = 0;
    for (let v = n; ; v = Math.floor(v / 10)) {
      digits[count++] = 48 + (v % 10);
      if (v < 10) break;
    }
    let at = rest;
    for (let i = count - 1; i >= 0; i--) tail[at++] = digits[i];
    const length = at;
    tail[at++] = 0x80;
    const blocks = at + 8 <= 64 ? 1 : 2;
    tail.fill(0, at, blocks * 64);
    const totalBits = (full + length) * 8;
    tail[blocks * 64 - 4] = (totalBits >>> 24) & 0xff;
    tail[blocks * 64 - 3] = (totalBits >>> 16) & 0xff;
    tail[blocks * 64 - 2] = (totalBits >>> 8) & 0xff;
    tail[blocks * 64 - 1] = totalBits & 0xff;
    state.set(mid);
    compress(state, tail, 0);
    if (blocks === 2) compress(state, tail, 64);
    if (zeroBits(state) >= bits) return { solution: String(n), tries: n + 1 };
    if ((n + 1) % yieldTries === 0) {
      if (onProgress) onProgress(n + 1);
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (signal && signal.aborted) throw signal.reason;
    }
  }
  throw new Error("no solution");
}
