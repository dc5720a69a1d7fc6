// Type declarations of @waitroom/client (written by hand; the code is src/index.js).
// The wire types are those of docs/api.md ("Schemas").

export type SessionStatus = "WAITING" | "ACTIVE" | "EXPIRED";
export type ExpiredReason = "timeout" | "left" | "completed" | "evicted" | "closed";

/** An estimated wait as a range (the API's WaitRangeBody): lowSeconds <= highSeconds. */
export interface WaitRange {
  lowSeconds: number;
  highSeconds: number;
}

/** A session as its client sees it (the API's SessionBody). */
export interface SessionView {
  waitingRoomSessionId: string;
  roomId: string;
  status: SessionStatus;
  /** WAITING only: live WAITING sessions ahead (0 = next). null in the pre-queue. */
  position: number | null;
  waitingCount: number;
  /** WAITING only: a single estimate, when the server knows the wait well; inside
   *  estimatedWaitRange. */
  estimatedWaitSeconds: number | null;
  /** WAITING only: the range the wait is expected in; null while no estimate is possible yet
   *  (paused, before opening, too few slots freed lately). Absent from older servers. */
  estimatedWaitRange?: WaitRange | null;
  /** WAITING in line only: the turn may come within 1.5 heartbeat intervals; follow() then holds
   *  its reads on the server (`?waitSeconds=`) to see the turn the moment it comes. Absent from
   *  older servers. */
  turnSoon?: boolean;
  prequeue: boolean;
  opensAt: string | null;
  joinedAt: string;
  admittedAt: string | null;
  expiresAt: string | null;
  heartbeatIntervalSeconds: number;
  /** ACTIVE only: the admission token (a compact JWT, EdDSA). */
  admissionToken: string | null;
  /** ACTIVE only: where the person goes next. */
  targetUrl: string | null;
  expiredReason: ExpiredReason | null;
}

/** What join() and resume() return; pass it to follow() and leave(). */
export interface Session {
  readonly id: string;
  readonly roomId: string;
  /** The node's origin ("" for the page's own). */
  readonly baseUrl: string;
  /** The Idempotency-Key of the join (null after resume()); as secret as the session id. */
  readonly idempotencyKey: string | null;
  /** The latest view seen by join, follow or leave. */
  view: SessionView;
  readonly fetch: typeof fetch;
}

export declare const LIMITS: Readonly<{
  requestTimeoutMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  retryAfterMaxMs: number;
  followAttemptsMax: number;
  joinAttemptsMax: number;
  challengeRoundsMax: number;
  challengeYieldTries: number;
  leaveAttemptsMax: number;
  heartbeatMinSeconds: number;
  heartbeatMaxSeconds: number;
  heartbeatDefaultSeconds: number;
  heldReadMaxSeconds: number;
  nearFrontHeartbeats: number;
  frontCheckIntervalMs: number;
  problemTextMaxChars: number;
}>;

/** An HTTP error (with the problem's fields), or no usable answer (`status` 0). */
export declare class WaitroomError extends Error {
  readonly name: "WaitroomError";
  /** HTTP status; 0 for a network error, a timeout or an answer that was not a view. */
  readonly status: number;
  /** The problem's kind (`room-full`, `unknown-room`, `unknown-session`, `rate-limited`, ...). */
  readonly type: string | null;
  readonly title: string | null;
  readonly detail: string | null;
  /** From `Retry-After`, in milliseconds. */
  readonly retryAfterMs: number | null;
  /** No answer, 408, 429 or 5xx. */
  readonly retryable: boolean;
}

export interface RetryEvent {
  error: WaitroomError;
  /** 1 for the first retry. */
  attempt: number;
  /** How long it waits before trying again. */
  delayMs: number;
}

export interface RequestOptions {
  /** The node's origin, e.g. "https://queue.example.com"; default "" (the page's own origin). */
  baseUrl?: string;
  /** Cancels the call; it rejects with the signal's reason (an AbortError by default). */
  signal?: AbortSignal;
  /** Called before each retry. */
  onRetry?: (event: RetryEvent) => void;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

export interface JoinOptions extends RequestOptions {
  /** Keep it (e.g. in sessionStorage) and pass it again after a reload during the join: the
   *  retry then gets the place the first attempt took. Default: 128 random bits. */
  idempotencyKey?: string;
  /** Attempts at most (the first and its retries), 1 to LIMITS.followAttemptsMax; default
   *  LIMITS.joinAttemptsMax. */
  attemptsMax?: number;
  /** Called when the room asks for a challenge, before solving it (a second or two at the
   *  suggested difficulty): a page can say what is going on. */
  onChallenge?: (event: { difficultyBits: number; expiresAt: string }) => void;
}

/** Solves a join challenge (docs/api.md, "Challenges"); join() does this by itself. */
export declare function solveChallenge(
  challenge: string,
  bits: number,
  options?: { yieldTries?: number; signal?: AbortSignal; onProgress?: (tries: number) => void },
): Promise<{ solution: string; tries: number }>;

export interface PositionEvent {
  position: number | null;
  waitingCount: number;
  estimatedWaitSeconds: number | null;
  /** The view's estimatedWaitRange (null when absent). */
  estimatedWaitRange: WaitRange | null;
  prequeue: boolean;
  view: SessionView;
}

export interface AdmittedEvent {
  token: string;
  targetUrl: string | null;
  view: SessionView;
}

export interface FollowOptions {
  signal?: AbortSignal;
  /** Keep heartbeating once ACTIVE (renewing the token, see onToken) instead of resolving. */
  keepAlive?: boolean;
  onUpdate?: (view: SessionView) => void;
  onPosition?: (event: PositionEvent) => void;
  onAdmitted?: (event: AdmittedEvent) => void;
  onToken?: (event: { token: string; view: SessionView }) => void;
  onExpired?: (view: SessionView) => void;
  onRetry?: (event: RetryEvent) => void;
}

export declare function join(roomId: string, options?: JoinOptions): Promise<Session>;
export declare function resume(sessionId: string, options?: RequestOptions): Promise<Session>;
/** Resolves with the ACTIVE view at admission (the EXPIRED one if the session ends first). */
export declare function follow(session: Session, options?: FollowOptions): Promise<SessionView>;
/** Resolves with the ended view (`expiredReason: "left"`, or the reason it had already). */
export declare function leave(session: Session, options?: { signal?: AbortSignal; onRetry?: (event: RetryEvent) => void }): Promise<SessionView>;
export declare function retryDelayMs(attempt: number, error?: { retryAfterMs?: number | null } | null): number;
export declare function newIdempotencyKey(): string;
