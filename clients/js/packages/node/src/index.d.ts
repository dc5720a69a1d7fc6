// Type declarations of @waitroom/node (written by hand; the code is src/index.js).

import type { IncomingMessage, ServerResponse } from "node:http";

/** The claims of an admission token (docs/api.md, "Admission token"). Times in Unix seconds. */
export interface AdmissionClaims {
  /** The node's --issuer. */
  iss: string;
  /** The room id. */
  aud: string;
  /** The session id. */
  sub: string;
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
}

export type AdmissionErrorCode =
  | "missing"
  | "malformed"
  | "bad-signature"
  | "expired"
  | "not-yet-valid"
  | "wrong-issuer"
  | "wrong-room"
  | "jwks-unavailable";

export declare class AdmissionError extends Error {
  readonly name: "AdmissionError";
  readonly code: AdmissionErrorCode;
  /** 401 (missing or invalid), 403 (wrong-room), 503 (jwks-unavailable). */
  readonly status: 401 | 403 | 503;
}

export interface VerifyOptions {
  /** The node's key set, e.g. "https://queue.example.com/.well-known/jwks.json". */
  jwksUrl: string;
  /** The room id the token must be for. */
  room: string;
  /** The node's --issuer; default "waitroom". */
  issuer?: string;
  /** Clock-skew allowance for exp and nbf, in seconds; default 0, at most 60. */
  clockToleranceSeconds?: number;
}

export interface MiddlewareOptions extends Omit<VerifyOptions, "room"> {
  /** The room id, or a function of the request that returns it. */
  room: string | ((req: IncomingMessage) => string);
  /** Read the token from the `waitroomToken` query parameter too; default true. */
  queryParameter?: boolean;
  /** The cookie to read the token from; default "waitroomToken"; false: none. */
  cookieName?: string | false;
}

export declare const LIMITS: Readonly<{
  tokenLengthMaxBytes: number;
  clockToleranceMaxSeconds: number;
  jwksCacheMaxAgeMs: number;
  jwksCooldownMs: number;
  jwksTimeoutMs: number;
  jwksUrlsMax: number;
  jwksUnavailableRetryAfterSeconds: number;
}>;
export declare const DEFAULT_ISSUER: "waitroom";
export declare const TOKEN_PARAMETER_NAME: "waitroomToken";

export declare function verifyAdmission(token: string | undefined | null, options: VerifyOptions): Promise<AdmissionClaims>;

/** Express / connect middleware; on success the claims are `req.admission`. */
export declare function requireAdmission(
  options: MiddlewareOptions,
): (req: IncomingMessage & { admission?: AdmissionClaims }, res: ServerResponse & { locals?: Record<string, unknown> }, next: (error?: unknown) => void) => void;

declare module "node:http" {
  interface IncomingMessage {
    /** Set by requireAdmission() on requests it let through. */
    admission?: AdmissionClaims;
  }
}
