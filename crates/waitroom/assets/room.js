// The waiting page: joins the room's line, keeps the place alive with heartbeats,
// shows where the person stands, and sends them on to the sale when it is their turn.
//
// Plain ES2020, no dependencies, no build step. It runs under the server's
// `Content-Security-Policy: default-src 'self'`, so there is no inline code, and API
// data only ever reaches the page through `textContent` and attributes, never HTML.
// The HTTP contract is docs/api.md; the page's own contract (element ids,
// `data-state` values, storage keys) is assets/README.md.
"use strict";

(function waitingPage() {
  const i18n = window.waitroomI18n;
  const t = i18n.t;

  const SESSIONS_PATH = "/api/waiting-room/sessions";
  const ROOMS_PATH = "/api/waiting-room/rooms";
  const CHALLENGE_WORKER_PATH = "/assets/challenge-worker.js";
  const ROOM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
  const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,128}$/;
  const STATUSES = new Set(["WAITING", "ACTIVE", "EXPIRED"]);
  const EXPIRED_REASONS = new Set(["timeout", "left", "completed", "evicted", "closed"]);
  /** `?preview` (the operator's console links to it): the page shows how a place in line looks,
   *  with example figures, and sends nothing: no join, no heartbeat, nothing stored. */
  const PREVIEW = new URLSearchParams(window.location.search).has("preview");
  /** `?pass=<code>`: a pass the operator handed out (docs/api.md#passes); the join carries it, and
   * a valid one is admitted at once. Anything but 1 to 64 characters is ignored. */
  const PASS = (() => {
    const pass = new URLSearchParams(window.location.search).get("pass");
    return pass !== null && pass.length >= 1 && pass.length <= 64 ? pass : null;
  })();
  /** The example place shown in a preview. */
  const PREVIEW_VIEW = { position: 41, waitingCount: 120, estimatedWaitSeconds: 540, heartbeatIntervalSeconds: 10 };
  /** Query parameter that carries the admission token to the protected service. */
  const TOKEN_PARAMETER = "waitroomToken";
  /** The notices the page can show (`data-notice` on #main), and their strings. */
  const NOTICES = {
    preview: "preview.notice",
    reconnecting: "connection.reconnecting",
    busy: "loading.busy",
    "leave-failed": "leave.failed",
    challenge: "challenge.working",
  };

  // Limits. Each bounds something that would otherwise be unbounded or left to chance.
  /** Challenges a join may solve in a row (each refused one is replaced by a new one). */
  const CHALLENGE_ROUNDS_MAX = 3;
  /** A request still unanswered after this is treated as a network error and retried. */
  const REQUEST_TIMEOUT_MS = 15000;
  /** First retry delay; doubles per consecutive failure. */
  const BACKOFF_BASE_MS = 1000;
  /** Longest retry delay of our own: well under the default waiting idle timeout
   *  (120 s), so a place survives a short outage. */
  const BACKOFF_MAX_MS = 30000;
  /** A Retry-After longer than this is not believed (a misconfigured proxy must not park the page). */
  const RETRY_AFTER_MAX_MS = 300000;
  /** Consecutive failures (about 20 minutes of them) before the page stops and offers "Try again". */
  const RETRY_ATTEMPTS_MAX = 40;
  /** Leaving is a user action: a few quick retries, then tell them it did not work. */
  const LEAVE_ATTEMPTS_MAX = 3;
  /** Used when a view carries no usable heartbeat interval; clamped to a sane range otherwise. */
  const HEARTBEAT_DEFAULT_SECONDS = 10;
  const HEARTBEAT_MIN_SECONDS = 1;
  const HEARTBEAT_MAX_SECONDS = 300;
  /** Screen readers hear position changes at most this often, not on every poll. */
  const ANNOUNCE_INTERVAL_MS = 30000;
  /** "It's your turn" is on screen at least this long before the redirect starts: long enough to be
   *  seen as the page changes, short enough that the turn reaches the sale within half a second of
   *  the slot freeing (the browser keeps showing this page until the target's first paint, so it
   *  stays up for the target's load time too; the target's own title is what a screen reader then
   *  announces). */
  const REDIRECT_DELAY_MS = 300;
  /** After redirecting once, a page loaded again within this window does not redirect again by
   *  itself (a protected service that bounces people back must not cause a redirect loop). */
  const REDIRECT_LOOP_GUARD_MS = 20000;
  /** Tab switches closer together than this do not each cause a request. */
  const RESYNC_MIN_INTERVAL_MS = 2000;
  /** While the view says `turnSoon` the page reads its view, asking the server to hold the answer
   *  until its turn comes or this many seconds pass (`?waitSeconds=`, at most 8: the API's bound),
   *  then reads again at once (see `scheduleFrontCheck`). */
  const HELD_READ_SECONDS = 8;
  /** ...and at least this long after the previous read began: a server that holds no more reads
   *  answers at once, and the page then reads once a second, as it did before held reads. */
  const FRONT_CHECK_MS = 1000;
  /** At `opensAt` everyone re-reads; a random delay up to this spreads that herd out. */
  const OPENING_JITTER_MS = 4000;
  /** A clock difference from the server smaller than this is within the `Date` header's
   *  one-second resolution and is ignored. */
  const CLOCK_SKEW_MIN_MS = 1500;
  /** Problem titles longer than this are cut (they are shown verbatim). */
  const PROBLEM_TITLE_MAX_CHARS = 200;

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body,
    main: $("main"),
    status: $("status"),
    statusText: $("status-text"),
    heading: $("heading"),
    roomName: $("room-name"),
    connection: $("connection"),
    storageNotice: $("storage-notice"),
    hint: $("hint"),
    loadingText: $("loading-text"),
    position: $("position"),
    progress: $("progress"),
    moved: $("moved"),
    eta: $("eta"),
    waitingCount: $("waiting-count"),
    opensAt: $("opens-at"),
    countdownLabel: $("countdown-label"),
    countdown: $("countdown"),
    activeMessage: $("active-message"),
    activeDetail: $("active-detail"),
    targetLink: $("target-link"),
    expiredMessage: $("expired-message"),
    errorTitle: $("error-title"),
    errorMessage: $("error-message"),
    rejoin: $("rejoin"),
    retry: $("retry"),
    leave: $("leave"),
    leaveDialog: $("leave-dialog"),
    leaveDialogTitle: $("leave-dialog-title"),
    leaveDialogBody: $("leave-dialog-body"),
    leaveCancel: $("leave-cancel"),
    leaveConfirm: $("leave-confirm"),
    announcePolite: $("announce-polite"),
    announceAssertive: $("announce-assertive"),
  };

  const twoDigits = new Intl.NumberFormat(i18n.locale, { minimumIntegerDigits: 2, useGrouping: false });
  const timeFormat = new Intl.DateTimeFormat(i18n.locale, { hour: "numeric", minute: "2-digit" });
  const dateFormat = new Intl.DateTimeFormat(i18n.locale, { weekday: "long", month: "long", day: "numeric" });
  const dayKeyFormat = new Intl.DateTimeFormat("en-CA", { year: "numeric", month: "2-digit", day: "2-digit" });

  // ---------------------------------------------------------------------------
  // Storage: localStorage when the browser allows it, memory otherwise (then a
  // reload loses the place, and the page says so).

  const storage = (() => {
    let backing = null;
    try {
      const probe = "waitroom:probe";
      window.localStorage.setItem(probe, "1");
      window.localStorage.removeItem(probe);
      backing = window.localStorage;
    } catch (_) {
      backing = null;
    }
    const memory = new Map();
    return {
      persistent: backing !== null,
      get(key) {
        try {
          if (backing) return backing.getItem(key);
        } catch (_) {
          // fall through to memory
        }
        return memory.has(key) ? memory.get(key) : null;
      },
      set(key, value) {
        memory.set(key, value);
        try {
          if (backing) backing.setItem(key, value);
        } catch (_) {
          // quota or privacy mode: memory still has it for this page's lifetime
        }
      },
      remove(key) {
        memory.delete(key);
        try {
          if (backing) backing.removeItem(key);
        } catch (_) {
          // nothing to do
        }
      },
    };
  })();

  // ---------------------------------------------------------------------------
  // Page state

  let roomId = null;
  let sessionKey = null; // waitroom:session:<roomId> -> JSON SessionRecord
  let joinKeyKey = null; // waitroom:join-key:<roomId> -> Idempotency-Key of a join not yet answered
  /** @type {{id: string, startPosition: number|null, expiredSeen: boolean, redirectedAt: number}|null} */
  let record = null;
  let view = null; // the last session view received
  let currentState = "loading";
  /** Bumped whenever the page starts over (rejoin, leave, another tab's session): answers to
   *  requests from an older generation are dropped. */
  let generation = 0;
  let heartbeatTimer = null;
  let frontInFlight = false; // a held read of the view is on its way
  let heartbeatInFlight = null; // generation of the heartbeat in flight, or null
  let failures = 0; // consecutive failed heartbeats
  let lastSyncAt = 0;
  let tickTimer = null;
  let redirectTimer = null;
  let frontTimer = null;
  let openingRequestedFor = null; // opensAt value for which the post-opening re-read was scheduled
  let expiryRequestedFor = null; // expiresAt value for which a re-read at 0:00 was scheduled
  let clockOffsetMs = 0; // server clock minus ours, when clearly off
  let lastAnnouncedAt = -Infinity;
  let lastPositionAnnounced = null;
  let leaving = false; // a DELETE is under way; further clicks on Leave are ignored
  const sleepers = new Set(); // wake-up functions of pending retry waits

  const serverNow = () => Date.now() + clockOffsetMs;

  // ---------------------------------------------------------------------------
  // HTTP

  class ApiError extends Error {
    /**
     * @param {number} status HTTP status, or 0 when no answer arrived (network error, timeout)
     * @param {string|null} title the problem's `title`, shown to the person as is
     * @param {number|null} retryAfterMs from `Retry-After`, when present
     */
    constructor(status, title, retryAfterMs, kind = null) {
      super(title || (status ? `HTTP ${status}` : "network error"));
      this.status = status;
      this.title = title;
      this.retryAfterMs = retryAfterMs;
      /** The problem's kind: the last segment of its `type` URI (`challenge-required`, ...). */
      this.kind = kind;
    }

    get retryable() {
      return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
    }
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

  function parseRetryAfter(value) {
    if (!value) return null;
    const trimmed = value.trim();
    const ms = /^\d+$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - serverNow();
    if (!Number.isFinite(ms)) return null;
    return Math.min(Math.max(ms, 0), RETRY_AFTER_MAX_MS);
  }

  // Countdowns run against the server's clock: a phone set five minutes fast must not show
  // "opens in 0:00" while the room is still closed. The `Date` header is enough for that.
  function noteServerClock(response, sentAt) {
    const header = response.headers.get("Date");
    const server = header ? Date.parse(header) : NaN;
    const receivedAt = Date.now();
    if (!Number.isFinite(server) || receivedAt - sentAt > 5000) return;
    const estimate = server + 500 - (sentAt + receivedAt) / 2; // Date is truncated to the second
    clockOffsetMs = Math.abs(estimate) > CLOCK_SKEW_MIN_MS ? Math.round(estimate) : 0;
  }

  async function request(method, path, { body, headers, isAnswer = isView } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const sentAt = Date.now();
    try {
      let response;
      try {
        response = await fetch(path, {
          method,
          headers: Object.assign(
            { Accept: "application/json, application/problem+json" },
            body === undefined ? {} : { "Content-Type": "application/json" },
            headers || {},
          ),
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: "no-store",
          credentials: "same-origin",
          signal: controller.signal,
        });
      } catch (_) {
        throw new ApiError(0, null, null);
      }
      noteServerClock(response, sentAt);
      let data = null;
      try {
        data = await response.json();
      } catch (_) {
        data = null; // empty or non-JSON body (a proxy's error page, a cut connection)
      }
      if (response.ok) {
        if (!isAnswer(data)) throw new ApiError(0, null, null); // retry: a good answer will come
        return data;
      }
      const title =
        data && typeof data.title === "string" ? data.title.slice(0, PROBLEM_TITLE_MAX_CHARS) : null;
      const kind = data && typeof data.type === "string" ? data.type.split("/").pop() : null;
      throw new ApiError(
        response.status,
        title,
        parseRetryAfter(response.headers.get("Retry-After")),
        kind,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  const sessionPath = (id) => `${SESSIONS_PATH}/${encodeURIComponent(id)}`;
  const api = {
    join: (room, idempotencyKey, solved) =>
      request("POST", SESSIONS_PATH, {
        body: Object.assign(
          { roomId: room },
          PASS === null ? {} : { pass: PASS },
          solved ? { challenge: solved.challenge, solution: solved.solution } : {},
        ),
        headers: { "Idempotency-Key": idempotencyKey },
      }),
    challenge: (room) =>
      request("POST", `${ROOMS_PATH}/${encodeURIComponent(room)}/challenge`, {
        isAnswer: (data) =>
          data !== null &&
          typeof data === "object" &&
          typeof data.challenge === "string" &&
          Number.isInteger(data.difficultyBits),
      }),
    get: (id) => request("GET", sessionPath(id)),
    held: (id) => request("GET", `${sessionPath(id)}?waitSeconds=${HELD_READ_SECONDS}`),
    heartbeat: (id) => request("POST", `${sessionPath(id)}:heartbeat`),
    leave: (id) => request("DELETE", sessionPath(id)),
  };

  // Wait before a retry; an `online` event ends every wait early.
  function sleep(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      sleepers.add(wake);
    });
  }

  // "Equal jitter": at least half the backoff, so retries never stampede right away, plus a
  // random half, so thousands of pages that failed together do not retry together.
  // The server's Retry-After wins when it gives one, with a little jitter added on top.
  function retryDelayMs(attempt, error) {
    if (error && error.retryAfterMs !== null && error.retryAfterMs !== undefined) {
      return error.retryAfterMs + Math.random() * Math.min(error.retryAfterMs * 0.2 + 250, 5000);
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt - 1, 16));
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  async function withRetry(operation, onRetry, attemptsMax = RETRY_ATTEMPTS_MAX) {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await operation();
      } catch (error) {
        if (!(error instanceof ApiError) || !error.retryable || attempt >= attemptsMax) throw error;
        onRetry(error, attempt);
        await sleep(retryDelayMs(attempt, error));
      }
    }
  }

  // ---------------------------------------------------------------------------
  // Session record in storage

  function newIdempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID(); // only in secure contexts (https, localhost)
    }
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function parseRecord(raw) {
    if (!raw) return null;
    try {
      const parsed = JSON.parse(raw);
      if (parsed && typeof parsed.id === "string" && SESSION_ID_PATTERN.test(parsed.id)) {
        return {
          id: parsed.id,
          startPosition: Number.isInteger(parsed.startPosition) ? parsed.startPosition : null,
          expiredSeen: parsed.expiredSeen === true,
          redirectedAt: Number.isFinite(parsed.redirectedAt) ? parsed.redirectedAt : 0,
        };
      }
    } catch (_) {
      // corrupt entry: forget it below
    }
    return null;
  }

  function saveRecord() {
    if (record && !PREVIEW) storage.set(sessionKey, JSON.stringify(record));
  }

  function forgetSession() {
    storage.remove(sessionKey);
    storage.remove(joinKeyKey);
    record = null;
    view = null;
  }

  // ---------------------------------------------------------------------------
  // Flow

  const isLive = (v) => v !== null && v.status !== "EXPIRED";

  function intervalMs(v) {
    const seconds = Number(v && v.heartbeatIntervalSeconds);
    const usable = Number.isFinite(seconds) && seconds > 0 ? seconds : HEARTBEAT_DEFAULT_SECONDS;
    return Math.min(Math.max(usable, HEARTBEAT_MIN_SECONDS), HEARTBEAT_MAX_SECONDS) * 1000;
  }

  function stopTimers() {
    clearTimeout(heartbeatTimer);
    clearTimeout(tickTimer);
    clearTimeout(redirectTimer);
    clearTimeout(frontTimer);
    heartbeatTimer = null;
    tickTimer = null;
    redirectTimer = null;
    frontTimer = null;
  }

  /** Start over: resume the stored session if it is still worth showing, else join. */
  async function start() {
    generation += 1;
    const gen = generation;
    stopTimers();
    failures = 0;
    setNotice(null);
    setState("loading");
    if (PREVIEW) {
      showPreview();
      return;
    }
    record = parseRecord(storage.get(sessionKey));
    try {
      if (record) {
        let existing = null;
        try {
          existing = await withRetry(() => api.get(record.id), (error) => {
            if (gen === generation) setNotice(noticeFor(error, false));
          });
        } catch (error) {
          // 404: forgotten (or never existed); 400: not a valid id. Either way, join anew.
          if (!(error instanceof ApiError) || (error.status !== 404 && error.status !== 400)) throw error;
        }
        if (gen !== generation) return;
        // An EXPIRED session is shown once (so the person learns why), then forgotten: the next
        // visit joins afresh.
        if (existing && !(existing.status === "EXPIRED" && record.expiredSeen)) {
          setNotice(null);
          accept(existing);
          if (isLive(existing)) scheduleHeartbeat(0); // the idle clock kept running while we were away
          return;
        }
        forgetSession();
      }
      await join(gen);
    } catch (error) {
      if (gen === generation) showFailure(error, "join");
    }
  }

  /** A preview: an example place in line, rendered like a real one, with a notice saying so. */
  function showPreview() {
    record = { id: "wr_preview", startPosition: null, expiredSeen: false, redirectedAt: 0 };
    accept({
      ...PREVIEW_VIEW,
      waitingRoomSessionId: record.id,
      roomId,
      status: "WAITING",
      prequeue: false,
      opensAt: null,
      joinedAt: new Date().toISOString(),
      admittedAt: null,
      expiresAt: null,
      admissionToken: null,
      targetUrl: null,
      expiredReason: null,
    });
    setNotice("preview");
    el.leave.disabled = true; // nothing to leave
  }

  async function join(gen) {
    // The key is stored *before* the request: if the answer is lost (network error, reload,
    // crash), the retry carries the same key and gets the same place back, not a new one.
    let key = storage.get(joinKeyKey);
    if (!key || !IDEMPOTENCY_KEY_PATTERN.test(key)) {
      key = newIdempotencyKey();
      storage.set(joinKeyKey, key);
    }
    // A room may ask every join to solve a challenge (docs/api.md, "Challenges"): the join
    // says so (403 `challenge-…`), and the page solves one and joins again with it. A challenge
    // refused for another reason (expired while solving, a key rotation, the room's difficulty
    // raised meanwhile) is replaced by a new one, a few times at most.
    let solved = null;
    let joined = null;
    for (let round = 0; joined === null; round += 1) {
      try {
        joined = await withRetry(() => api.join(roomId, key, solved), (error) => {
          if (gen === generation) setNotice(noticeFor(error, true));
        });
      } catch (error) {
        const challenged =
          error instanceof ApiError && error.status === 403 && /^challenge-/.test(error.kind || "");
        if (!challenged || round >= CHALLENGE_ROUNDS_MAX || gen !== generation) throw error;
        solved = await solveChallenge(gen);
        if (gen !== generation) return;
      }
    }
    if (gen !== generation) return;
    // The session id now does what the key did; a later "join again" needs a new key anyway
    // (the old one would replay this session).
    storage.remove(joinKeyKey);
    record = { id: joined.waitingRoomSessionId, startPosition: null, expiredSeen: false, redirectedAt: 0 };
    saveRecord();
    setNotice(null);
    lastSyncAt = Date.now();
    accept(joined);
    if (isLive(joined)) scheduleHeartbeat(intervalMs(joined));
  }

  /** Gets a challenge and solves it in a Web Worker (assets/challenge-worker.js), telling the
   *  person what is going on meanwhile: `{challenge, solution}`, or null when the room no longer
   *  asks for one. */
  async function solveChallenge(gen) {
    let issued;
    try {
      issued = await withRetry(() => api.challenge(roomId), (error) => {
        if (gen === generation) setNotice(noticeFor(error, true));
      });
    } catch (error) {
      // The room stopped asking for one meanwhile: join without.
      if (error instanceof ApiError && error.kind === "challenge-not-required") return null;
      throw error;
    }
    setNotice("challenge");
    el.main.dataset.challenge = "working";
    const started = Date.now();
    const found = await new Promise((resolve, reject) => {
      const worker = new Worker(CHALLENGE_WORKER_PATH);
      worker.onmessage = (event) => {
        const message = event.data || {};
        if (typeof message.solution === "string") {
          worker.terminate();
          resolve(message);
        } else if (message.error) {
          worker.terminate();
          reject(new Error(message.error));
        }
      };
      worker.onerror = (event) => {
        worker.terminate();
        reject(new Error(event.message || "the challenge worker failed"));
      };
      worker.postMessage({ challenge: issued.challenge, bits: issued.difficultyBits });
    });
    // For the browser test and the figures: how long this browser took.
    el.main.dataset.challenge = "solved";
    el.main.dataset.challengeMs = String(Date.now() - started);
    el.main.dataset.challengeTries = String(found.tries);
    clearNotice("challenge");
    return { challenge: issued.challenge, solution: found.solution };
  }

  function scheduleHeartbeat(delayMs) {
    clearTimeout(heartbeatTimer);
    heartbeatTimer = setTimeout(heartbeat, Math.max(0, delayMs));
  }

  async function heartbeat() {
    heartbeatTimer = null;
    const gen = generation;
    if (!record || !isLive(view) || heartbeatInFlight === gen) return;
    heartbeatInFlight = gen;
    try {
      const next = await api.heartbeat(record.id);
      if (gen !== generation) return;
      failures = 0;
      lastSyncAt = Date.now();
      clearNotice("reconnecting");
      accept(next);
      if (isLive(next)) scheduleHeartbeat(intervalMs(next));
    } catch (error) {
      if (gen !== generation) return;
      if (error instanceof ApiError && (error.status === 404 || error.status === 400)) {
        // The server no longer knows this session (forgotten long after it ended).
        accept({ waitingRoomSessionId: record.id, status: "EXPIRED", expiredReason: null });
      } else if (error instanceof ApiError && error.retryable && failures < RETRY_ATTEMPTS_MAX) {
        failures += 1;
        setNotice(noticeFor(error, false)); // keeps the last known position on screen
        scheduleHeartbeat(retryDelayMs(failures, error));
      } else {
        showFailure(error, "heartbeat");
      }
    } finally {
      if (heartbeatInFlight === gen) heartbeatInFlight = null;
    }
  }

  /** Re-read now (tab visible again, page restored, back online), unless we just did. */
  function resync() {
    if (PREVIEW || !isLive(view) || heartbeatInFlight === generation) return;
    if (failures === 0 && Date.now() - lastSyncAt < RESYNC_MIN_INTERVAL_MS) return;
    scheduleHeartbeat(0);
  }

  function accept(next) {
    if (!record || next.waitingRoomSessionId !== record.id) return;
    view = next;
    if (next.status === "WAITING" && Number.isInteger(next.position)) {
      // The progress bar runs from the first position we saw down to 0.
      if (record.startPosition === null || next.position > record.startPosition) {
        record.startPosition = next.position;
        saveRecord();
      }
    }
    if (next.status === "EXPIRED") {
      stopTimers();
      if (!record.expiredSeen) {
        record.expiredSeen = true;
        saveRecord();
      }
      renderExpired(next);
    } else if (next.status === "ACTIVE") {
      renderActive(next);
      maybeRedirect();
    } else if (next.prequeue === true) {
      renderPrequeue(next);
    } else {
      renderWaiting(next);
    }
    scheduleFrontCheck();
  }

  // Heartbeats keep the place alive; at their interval (often 10-30 s) they would also tell the
  // person of their turn up to a whole interval late, while the slot sits idle and its idle clock
  // runs. So a page near the front also reads its view (a GET: answered from the node's memory,
  // nothing written to the log), asking the server to hold the answer until the turn comes
  // (`waitSeconds`): the page learns of it the moment the slot frees, with one request per
  // HELD_READ_SECONDS instead of one per second. "Near" is the server's `turnSoon`: the room marks
  // the sessions whose turn may come within 1.5 heartbeat intervals (from its admissions and freed
  // slots of the last moments, estimate or not: the first fill included), so about (admissions
  // per second x 1.5 x heartbeat interval) pages do this at once, whatever the size of the line;
  // the server holds reads for these sessions only.
  function isNearFront(v) {
    return !!v && v.status === "WAITING" && v.turnSoon === true;
  }

  function scheduleFrontCheck(delayMs = FRONT_CHECK_MS) {
    if (frontInFlight) return; // the held read's answer schedules the next
    clearTimeout(frontTimer);
    frontTimer = null;
    if (record && isNearFront(view)) frontTimer = setTimeout(frontCheck, delayMs);
  }

  async function frontCheck() {
    frontTimer = null;
    const gen = generation;
    if (!record || !isNearFront(view)) return;
    const startedAt = Date.now();
    frontInFlight = true;
    let next = null;
    try {
      next = await api.held(record.id);
    } catch (_) {
      // Failures are the heartbeat's to report and retry; this check just tries again later.
    } finally {
      frontInFlight = false;
    }
    if (gen !== generation) return;
    if (next) {
      lastSyncAt = Date.now();
      accept(next);
    }
    // Read again at once after a held answer; a second after the last read began otherwise.
    scheduleFrontCheck(Math.max(0, FRONT_CHECK_MS - (Date.now() - startedAt)));
  }

  // ---------------------------------------------------------------------------
  // Admission: handing the token to the protected service
  //
  // The token travels as the query parameter `waitroomToken` of the room's targetUrl:
  // - The protected service must check the token on the server, on its very first request,
  //   before it renders seat selection. A URL fragment (#...) never reaches the server, so it
  //   would need a client-side bootstrap page that renders first and verifies later.
  // - Cookies cannot carry it: the sale usually lives on another site than the waiting room,
  //   and this origin cannot set cookies there. An auto-submitted cross-site POST form would
  //   keep it out of the URL, but arrives without the sale site's SameSite=Lax cookies and
  //   breaks the plain "Continue" link used as a fallback.
  // - What a URL costs (it can land in history, server logs, and the Referer of the next
  //   page's requests) is kept small: the token is short-lived (exp <= 5 minutes, earlier if
  //   the session ends), audience-bound to this room (aud) and bound to one session (sub), so a
  //   leaked one is worth at most the rest of one person's turn in one room. `location.replace`
  //   keeps this page's history entry from accumulating tokenised URLs. The protected service
  //   should verify it, swap it for its own session cookie and redirect to the same URL without
  //   the parameter (and send `Referrer-Policy: no-referrer` on that first response).
  // - This page's `<meta name="referrer" content="no-referrer">` keeps the navigation from
  //   telling the sale which room page sent it; the token-bearing URL's own Referer is the
  //   protected service's to control, as above.

  function targetWithToken(v) {
    if (!v || v.status !== "ACTIVE") return null;
    if (typeof v.targetUrl !== "string" || typeof v.admissionToken !== "string" || !v.admissionToken) {
      return null;
    }
    let url;
    try {
      url = new URL(v.targetUrl);
    } catch (_) {
      return null;
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") return null;
    if (url.searchParams.has(TOKEN_PARAMETER)) {
      url.searchParams.set(TOKEN_PARAMETER, v.admissionToken);
    } else {
      // Append without re-serialising the existing query: `searchParams` would rewrite
      // `%20` as `+` and `?flag` as `?flag=`, which breaks signed URLs. A JWT is URL-safe.
      const encoded = `${encodeURIComponent(TOKEN_PARAMETER)}=${encodeURIComponent(v.admissionToken)}`;
      url.search = url.search ? `${url.search}&${encoded}` : `?${encoded}`;
    }
    return url;
  }

  const recentlyRedirected = () =>
    record !== null && Math.abs(Date.now() - record.redirectedAt) < REDIRECT_LOOP_GUARD_MS;

  function maybeRedirect() {
    if (redirectTimer !== null || recentlyRedirected() || !targetWithToken(view)) return;
    redirectTimer = setTimeout(() => {
      redirectTimer = null;
      const target = targetWithToken(view); // the freshest token, in case a heartbeat renewed it
      if (!target) return;
      record.redirectedAt = Date.now();
      saveRecord();
      window.location.replace(target.href);
    }, REDIRECT_DELAY_MS);
  }

  // ---------------------------------------------------------------------------
  // Leaving and joining again

  function openLeaveDialog() {
    const active = currentState === "active";
    const title = t(active ? "leave.dialogTitleActive" : "leave.dialogTitle");
    const body = t(active ? "leave.dialogBodyActive" : "leave.dialogBody");
    if (typeof el.leaveDialog.showModal !== "function") {
      if (window.confirm(`${title}\n\n${body}`)) leave();
      return;
    }
    el.leaveDialogTitle.textContent = title;
    el.leaveDialogBody.textContent = body;
    el.leaveConfirm.textContent = t(active ? "leave.confirmActive" : "leave.confirm");
    el.leaveDialog.showModal();
    el.leaveCancel.focus(); // the safe choice is the default
  }

  async function leave() {
    if (PREVIEW || leaving || !record || !isLive(view)) return;
    generation += 1; // heartbeats in flight must not paint "waiting" over "you left"
    const gen = generation;
    const id = record.id;
    stopTimers();
    // Not `disabled`: disabling the focused button would throw keyboard focus back to <body>.
    leaving = true;
    el.leave.setAttribute("aria-disabled", "true");
    clearNotice("leave-failed");
    try {
      const result = await withRetry(() => api.leave(id), () => {}, LEAVE_ATTEMPTS_MAX);
      if (gen !== generation) return;
      setNotice(null);
      accept(result);
    } catch (error) {
      if (gen !== generation) return;
      setNotice("leave-failed");
      scheduleHeartbeat(intervalMs(view)); // still in line: keep the place alive
      updateTicker();
    } finally {
      leaving = false;
      el.leave.removeAttribute("aria-disabled");
    }
  }

  function rejoin() {
    forgetSession();
    start();
  }

  // ---------------------------------------------------------------------------
  // Rendering

  /** Switch the page to `state`; answers the state it was in before. */
  function setState(state) {
    const previous = currentState;
    currentState = state;
    el.body.dataset.state = state;
    el.main.dataset.state = state;
    el.main.setAttribute("aria-busy", String(state === "loading"));
    const focused = document.activeElement;
    for (const node of document.querySelectorAll("[data-show]")) {
      node.hidden = !node.dataset.show.split(" ").includes(state);
    }
    el.statusText.textContent = t(`status.${state}`);
    el.status.dataset.status = view && state !== "loading" && state !== "error" ? view.status : "";
    if (state !== "expired") delete el.main.dataset.reason;
    if (state !== "error") delete el.main.dataset.error;
    if (state !== previous) {
      clearNotice("leave-failed");
      // "It's your turn" (or "expired") must not sit behind a question about the old state.
      if (el.leaveDialog.open) el.leaveDialog.close();
    }
    // A button that just disappeared (Leave, Join again) would drop keyboard focus to the
    // top of the page; put it on the new heading instead, which is read out.
    if (focused && focused !== document.body && focused.closest("[hidden]")) el.heading.focus();
    return previous;
  }

  /** Show the calm notice `kind` (a key of NOTICES) above the content, or none (null). */
  function setNotice(kind) {
    const previous = el.main.dataset.notice;
    el.main.dataset.notice = kind || "none";
    el.connection.hidden = !kind;
    el.connection.textContent = kind ? t(NOTICES[kind]) : "";
    if (kind && kind !== previous) announce(el.connection.textContent, false);
  }

  /** Hide the notice if it is of `kind` (a heartbeat that got through ends "reconnecting",
   *  but not "we couldn't leave"). */
  function clearNotice(kind) {
    if (el.main.dataset.notice === kind) setNotice(null);
  }

  // While joining, 429/503 mean a crowd (or a full line) at the door; any other failure,
  // and every failure once in line, is a connection problem: the place is kept meanwhile.
  function noticeFor(error, joining) {
    return joining && (error.status === 429 || error.status === 503) ? "busy" : "reconnecting";
  }

  function announce(text, urgent) {
    const region = urgent ? el.announceAssertive : el.announcePolite;
    region.textContent = "";
    // Set after a beat so that a repeated message is announced again.
    setTimeout(() => {
      region.textContent = text;
    }, 100);
    if (!urgent) lastAnnouncedAt = Date.now();
  }

  /** Position changes are announced at most every ANNOUNCE_INTERVAL_MS; arriving in line
   *  from the pre-queue is announced at once; the first render after loading is not (the
   *  page is being read out then anyway). */
  function announcePosition(text, previous) {
    if (previous === "loading") {
      lastPositionAnnounced = text;
      lastAnnouncedAt = Date.now();
      return;
    }
    if (text === lastPositionAnnounced) return;
    if (previous === "waiting" && Date.now() - lastAnnouncedAt < ANNOUNCE_INTERVAL_MS) return;
    lastPositionAnnounced = text;
    announce(text, false);
  }

  /** Fill `node` with a translated string, wrapping the value `emphasise` in `<span class=figure>`. */
  function renderParts(node, key, vars, emphasise) {
    const children = i18n.parts(key, vars).map((part) => {
      if (part.name !== emphasise) return document.createTextNode(part.text);
      const span = document.createElement("span");
      span.className = "figure";
      span.textContent = part.text;
      return span;
    });
    node.replaceChildren(...children);
  }

  // The server's estimate: a figure when it knows the wait well, else a range ("between 4 and 9
  // minutes"), else nothing yet (the room is paused, or has not seen enough people leave to know
  // how long they stay): the page shows what the server decided, never a figure of its own.
  function etaText(v) {
    const seconds = v.estimatedWaitSeconds;
    if (Number.isInteger(seconds) && seconds >= 0) return figureText(seconds);
    const range = v.estimatedWaitRange;
    if (range && Number.isInteger(range.lowSeconds) && Number.isInteger(range.highSeconds)) {
      return rangeText(range.lowSeconds, range.highSeconds);
    }
    return t("eta.unknown");
  }

  function rangeText(lowSeconds, highSeconds) {
    if (highSeconds < 60) return t("eta.lessThanMinute");
    if (highSeconds > 24 * 3600) return t("eta.moreThanDay");
    if (highSeconds >= 2 * 3600) {
      const low = Math.floor(lowSeconds / 3600);
      const high = Math.ceil(highSeconds / 3600);
      return low < high ? t("eta.rangeHours", { low, high }) : t("eta.hours", { count: high });
    }
    // Rounded outwards: the range the page shows holds the range the server gave.
    const low = Math.floor(lowSeconds / 60);
    const high = Math.ceil(highSeconds / 60);
    if (low === 0) return t("eta.upToMinutes", { count: high });
    return low < high ? t("eta.rangeMinutes", { low, high }) : t("eta.minutes", { count: high });
  }

  function figureText(seconds) {
    if (seconds < 60) return t("eta.lessThanMinute");
    const minutes = Math.round(seconds / 60);
    // Exact up to ten minutes, then in fives: the estimate is not more precise than that.
    const shown = minutes <= 10 ? minutes : Math.round(minutes / 5) * 5;
    if (shown < 60) return t("eta.minutes", { count: shown });
    const hours = Math.max(1, Math.round(seconds / 3600));
    if (hours <= 24) return t("eta.hours", { count: hours });
    return t("eta.moreThanDay");
  }

  function countText(count) {
    return Number.isInteger(count) && count >= 0 ? t("waitingCount.value", { count }) : "—";
  }

  function renderWaiting(v) {
    const previous = setState("waiting");
    el.heading.textContent = t("waiting.heading");
    const position = Number.isInteger(v.position) && v.position >= 0 ? v.position : null;
    if (position === null) {
      // Waiting in line with no place: the room draws its admissions at random (a `random`
      // queueing method), so there is no place to show, only the count and the expected wait.
      el.position.textContent = t(v.position === null ? "position.random" : "position.unknown");
      el.progress.max = 1;
      el.progress.value = 0;
      el.progress.hidden = v.position === null; // a draw has no progress to show
      el.moved.hidden = true;
      document.title = t("page.title");
    } else {
      el.position.classList.toggle("is-next", position === 0);
      if (position === 0) el.position.textContent = t("position.next");
      else renderParts(el.position, "position.ahead", { count: position }, "count");
      const start = Math.max(record.startPosition === null ? position : record.startPosition, position);
      const moved = start - position;
      el.progress.hidden = false;
      el.progress.max = Math.max(start, 1);
      el.progress.value = position === 0 ? el.progress.max : moved;
      el.moved.hidden = moved <= 0;
      el.moved.textContent = moved > 0 ? t("progress.moved", { count: moved }) : "";
      document.title =
        position === 0 ? t("page.titleNext") : t("page.titleWaiting", { count: position });
    }
    el.eta.textContent = etaText(v);
    el.waitingCount.textContent = countText(v.waitingCount);
    updateTicker();
    announcePosition(el.position.textContent, previous);
  }

  function renderPrequeue(v) {
    const previous = setState("prequeue");
    el.heading.textContent = t("prequeue.heading");
    const opensAt = typeof v.opensAt === "string" ? Date.parse(v.opensAt) : NaN;
    if (Number.isFinite(opensAt)) {
      const time = timeFormat.format(opensAt);
      const sameDay = dayKeyFormat.format(opensAt) === dayKeyFormat.format(Date.now());
      el.opensAt.textContent = sameDay
        ? t("prequeue.opensAtTime", { time })
        : t("prequeue.opensAtDate", { date: dateFormat.format(opensAt), time });
    } else {
      el.opensAt.textContent = t("prequeue.opensSoon");
    }
    el.waitingCount.textContent = countText(v.waitingCount);
    document.title = t("page.title");
    updateTicker();
    if (previous !== "prequeue" && previous !== "loading") announce(el.heading.textContent, false);
  }

  function renderActive(v) {
    const changed = setState("active") !== "active";
    el.heading.textContent = t("active.heading");
    const target = targetWithToken(v);
    el.targetLink.hidden = target === null;
    if (target) {
      el.targetLink.href = target.href;
      const redirecting = redirectTimer !== null || !recentlyRedirected();
      el.activeMessage.textContent = redirecting ? t("active.redirecting") : t("active.returnedText");
      el.activeDetail.textContent = redirecting ? t("active.continueText") : "";
    } else {
      el.targetLink.removeAttribute("href");
      el.activeMessage.textContent = t("active.noTarget");
      el.activeDetail.textContent = "";
    }
    el.activeDetail.hidden = el.activeDetail.textContent === "";
    el.leave.textContent = t("leave.active");
    document.title = t("page.titleActive");
    updateTicker();
    if (changed) announce(t(target ? "active.announce" : "active.announceNoTarget"), true);
  }

  function renderExpired(v) {
    const changed = setState("expired") !== "expired";
    const reason = EXPIRED_REASONS.has(v.expiredReason) ? v.expiredReason : "unknown";
    // Timing out after being admitted is a different story from losing a place in line.
    const key = reason === "timeout" && v.admittedAt ? "timeoutActive" : reason;
    el.main.dataset.reason = reason;
    el.heading.textContent = t(`expired.heading.${key}`);
    el.expiredMessage.textContent = t(`expired.body.${key}`);
    // A closed room has nothing to rejoin: a new join would only answer 404.
    el.rejoin.hidden = reason === "closed";
    document.title = t("page.title");
    if (changed) announce(el.heading.textContent, false);
  }

  /**
   * @param {"unavailable"|"badLink"|"offline"|"problem"} kind
   * @param {string|null} title the API problem's title, shown as is
   */
  function renderError(kind, title) {
    stopTimers();
    const changed = setState("error") !== "error";
    el.main.dataset.error = kind;
    const prefix = kind === "problem" ? "error" : `error.${kind}`;
    el.heading.textContent = t(`${prefix}.heading`);
    el.errorTitle.textContent = title || "";
    el.errorTitle.hidden = !title;
    el.errorMessage.textContent = t(`${prefix}.body`);
    el.retry.hidden = kind === "badLink";
    document.title = t("page.title");
    if (changed) announce(el.heading.textContent, false);
  }

  function showFailure(error, phase) {
    if (!(error instanceof ApiError)) {
      console.error(error); // a bug of ours: say something calm rather than hang on "loading"
      renderError("problem", null);
    } else if (phase === "join" && error.status === 404) {
      renderError("unavailable", null);
    } else if (error.status === 0) {
      renderError("offline", null);
    } else {
      renderError("problem", error.title);
    }
  }

  function formatCountdown(ms) {
    const total = Math.ceil(ms / 1000);
    const days = Math.floor(total / 86400);
    const hours = Math.floor((total % 86400) / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = total % 60;
    const clock =
      days > 0 || hours > 0
        ? `${i18n.formatNumber(hours)}:${twoDigits.format(minutes)}:${twoDigits.format(seconds)}`
        : `${i18n.formatNumber(minutes)}:${twoDigits.format(seconds)}`;
    return days > 0 ? `${t("countdown.days", { count: days })} ${clock}` : clock;
  }

  /** Runs the one-second countdown while it is on screen (pre-queue and active). */
  function updateTicker() {
    clearTimeout(tickTimer);
    tickTimer = null;
    if (currentState === "prequeue" || currentState === "active") tick();
  }

  function tick() {
    tickTimer = null;
    const prequeue = currentState === "prequeue";
    const field = prequeue ? view.opensAt : view.expiresAt;
    const deadline = typeof field === "string" ? Date.parse(field) : NaN;
    if (!Number.isFinite(deadline)) {
      el.countdownLabel.textContent = "";
      el.countdown.textContent = "";
      return;
    }
    const remaining = deadline - serverNow();
    if (prequeue && remaining <= 0) {
      el.countdownLabel.textContent = t("prequeue.opening");
      el.countdown.textContent = "";
      if (openingRequestedFor !== field) {
        // The draw happens at opensAt; ask soon after, but not all in the same millisecond.
        openingRequestedFor = field;
        scheduleHeartbeat(500 + Math.random() * OPENING_JITTER_MS);
      }
      return;
    }
    el.countdownLabel.textContent = t(prequeue ? "prequeue.countdownLabel" : "active.countdownLabel");
    el.countdown.textContent = formatCountdown(Math.max(0, remaining));
    if (remaining <= 0) {
      if (expiryRequestedFor !== field) {
        expiryRequestedFor = field;
        scheduleHeartbeat(500); // the server decides whether the turn is over
      }
      return;
    }
    // Wake when the displayed second changes.
    const untilNextSecond = remaining % 1000 || 1000;
    tickTimer = setTimeout(tick, untilNextSecond + 15);
  }

  // ---------------------------------------------------------------------------
  // Start-up

  function roomIdFromPath() {
    const path = window.location.pathname;
    let segment;
    try {
      segment = decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
    } catch (_) {
      return null;
    }
    return ROOM_ID_PATTERN.test(segment) ? segment : null;
  }

  function init() {
    document.documentElement.lang = i18n.lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    el.leave.textContent = t("leave");
    el.heading.textContent = t("loading.heading");
    el.statusText.textContent = t("status.loading");
    document.title = t("page.title");
    el.main.dataset.notice = "none";

    roomId = roomIdFromPath();
    if (roomId === null) {
      renderError("badLink", null);
      return;
    }
    sessionKey = `waitroom:session:${roomId}`;
    joinKeyKey = `waitroom:join-key:${roomId}`;
    el.roomName.textContent = t("room.label", { room: roomId });
    el.storageNotice.hidden = storage.persistent;
    el.hint.textContent = t(storage.persistent ? "waiting.hint" : "waiting.hintNoStorage");

    el.leave.addEventListener("click", openLeaveDialog);
    el.leaveCancel.addEventListener("click", () => el.leaveDialog.close());
    el.leaveConfirm.addEventListener("click", () => {
      el.leaveDialog.close();
      leave();
    });
    el.rejoin.addEventListener("click", rejoin);
    el.retry.addEventListener("click", () => start());

    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") resync();
    });
    // Restored from the back/forward cache: timers were frozen, the view may be stale.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) resync();
    });
    window.addEventListener("online", () => {
      for (const wake of Array.from(sleepers)) wake();
      resync();
    });
    // Another tab of this room joined anew (e.g. "Join the line again" there): follow it,
    // rather than keep showing a session that has ended.
    window.addEventListener("storage", (event) => {
      if (event.key !== sessionKey) return;
      const other = parseRecord(event.newValue);
      if (other && (!record || other.id !== record.id)) start();
    });

    start();
  }

  init();
})();
