// @waitroom/node: verify waitroom admission tokens in a Node service, and an Express (or any
// connect-style) middleware that lets only admitted people through.
//
// Tokens are compact JWTs signed by the waitroom node with Ed25519 (`alg: EdDSA`): claims `iss`
// (the node's --issuer, `waitroom` by default), `aud` (the room id), `sub` (the session id),
// `iat`, `nbf`, `exp` (at most 5 minutes after issue) and `jti` (docs/api.md, "Admission token").
// The node's public keys are its JWKS, `GET /.well-known/jwks.json`.
//
// Built on jose (https://github.com/panva/jose), whose remote key set fetches the JWKS once,
// caches it, and fetches it again when a token names a key it does not hold (a rotated key), at
// most once per cooldown. jose 5 rather than 6: jose 6 runs on the global WebCrypto `crypto`,
// which Node 18 (Debian 12's nodejs) does not have; jose 5 uses node:crypto under Node.

import { createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify } from "jose";

/** Every limit of the verifier, with its unit, in one place. */
export const LIMITS = Object.freeze({
  /** Longest token accepted, in bytes, before any decoding. A waitroom token is about 450 bytes
   *  (the same bound as the Rust verifier's TOKEN_LENGTH_MAX_BYTES). */
  tokenLengthMaxBytes: 4 * 1024,
  /** Largest clock-skew allowance honoured, in seconds (tokens live at most 5 minutes; a larger
   *  `clockToleranceSeconds` is cut to this, as the Rust verifier's LEEWAY_MAX_S). */
  clockToleranceMaxSeconds: 60,
  /** The JWKS is fetched again after this long even if every token's key is known: the node
   *  serves it with `Cache-Control: max-age=300`. */
  jwksCacheMaxAgeMs: 300_000,
  /** After a fetch of the JWKS, a token with an unknown `kid` waits this long before it can cause
   *  another (so forged `kid`s cannot make us hammer the node). */
  jwksCooldownMs: 30_000,
  /** A JWKS fetch unanswered after this long fails (503 from the middleware). */
  jwksTimeoutMs: 5_000,
  /** Distinct JWKS URLs whose key sets are kept (each is one node or fleet; more is a misuse). */
  jwksUrlsMax: 16,
  /** `Retry-After` of the middleware's 503 when the key set cannot be read: jose fetches it again
   *  on the next request, so a client may come back soon. */
  jwksUnavailableRetryAfterSeconds: 5,
});

/** The node's default `--issuer`. */
export const DEFAULT_ISSUER = "waitroom";

/** Default name of the query parameter and the cookie that carry a token (as the built-in page
 *  sends it, and as the Rust `RequireAdmission` layer reads it). */
export const TOKEN_PARAMETER_NAME = "waitroomToken";

const ROOM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * Why a token was refused. `code` is one of `missing`, `malformed`, `bad-signature`, `expired`,
 * `not-yet-valid`, `wrong-issuer`, `wrong-room`, `jwks-unavailable`; `status` the HTTP status a
 * service should answer: 401 for a missing or invalid token, 403 for a valid token of another
 * room (the person was admitted, but not here), 503 when the node's key set could not be read.
 */
export class AdmissionError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = "AdmissionError";
    this.code = code;
    this.status = code === "wrong-room" ? 403 : code === "jwks-unavailable" ? 503 : 401;
  }
}

const keySets = new Map(); // jwksUrl (normalised) -> jose remote key set

function remoteKeySet(jwksUrl) {
  let url;
  try {
    url = new URL(jwksUrl);
  } catch (cause) {
    throw new TypeError(`jwksUrl is not a URL: ${JSON.stringify(jwksUrl)}`, { cause });
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new TypeError(`jwksUrl must be http(s): ${url.href}`);
  let keySet = keySets.get(url.href);
  if (keySet === undefined) {
    if (keySets.size >= LIMITS.jwksUrlsMax) {
      // The oldest goes: a Map iterates in insertion order.
      keySets.delete(keySets.keys().next().value);
    }
    keySet = createRemoteJWKSet(url, {
      cacheMaxAge: LIMITS.jwksCacheMaxAgeMs,
      cooldownDuration: LIMITS.jwksCooldownMs,
      timeoutDuration: LIMITS.jwksTimeoutMs,
    });
    keySets.set(url.href, keySet);
  }
  return keySet;
}

function checkRoom(room) {
  if (typeof room !== "string" || !ROOM_ID_PATTERN.test(room)) {
    throw new TypeError(`room must be a room id (letters, digits, '.', '_', '-'; at most 64): ${JSON.stringify(room)}`);
  }
}

/**
 * Verifies an admission token: signed with EdDSA (Ed25519) by a key of the node's JWKS (fetched
 * from `jwksUrl` and cached), issued by `issuer` (default `waitroom`), unexpired and valid now
 * (`exp`, `nbf`, with `clockToleranceSeconds`, default 0, at most 60), and for `room`. Resolves
 * with the claims `{iss, aud, sub, iat, nbf, exp, jti}` (`sub` is the session id); rejects with
 * an AdmissionError.
 */
export async function verifyAdmission(token, options = {}) {
  const { jwksUrl, room } = options;
  checkRoom(room);
  const issuer = options.issuer === undefined ? DEFAULT_ISSUER : options.issuer;
  if (typeof issuer !== "string" || issuer === "") throw new TypeError("issuer must be a non-empty string");
  const tolerance = options.clockToleranceSeconds === undefined ? 0 : options.clockToleranceSeconds;
  if (!Number.isFinite(tolerance) || tolerance < 0) throw new TypeError("clockToleranceSeconds must be a number >= 0");
  const keySet = remoteKeySet(jwksUrl);

  if (token === undefined || token === null || token === "") throw new AdmissionError("missing", "no admission token");
  if (typeof token !== "string") throw new AdmissionError("malformed", "the admission token is not a string");
  if (token.length > LIMITS.tokenLengthMaxBytes) {
    throw new AdmissionError("malformed", `the admission token is longer than ${LIMITS.tokenLengthMaxBytes} bytes`);
  }
  // EdDSA only, whatever the key set holds: `alg: none`, HMAC with the public key as secret and
  // every other algorithm are refused before any key is looked at.
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch (cause) {
    throw new AdmissionError("malformed", "the admission token is not a compact JWS", { cause });
  }
  if (header.alg !== "EdDSA") throw new AdmissionError("malformed", `the admission token's alg is ${JSON.stringify(header.alg)}, not EdDSA`);

  let payload;
  try {
    ({ payload } = await jwtVerify(token, keySet, {
      algorithms: ["EdDSA"],
      issuer,
      clockTolerance: Math.min(tolerance, LIMITS.clockToleranceMaxSeconds),
      requiredClaims: ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"],
    }));
  } catch (error) {
    throw translate(error);
  }
  // The room is checked after the signature and the times, so that only a genuine, live token
  // of another room is a 403.
  if (typeof payload.aud !== "string" || payload.aud !== room) {
    throw new AdmissionError("wrong-room", `the admission token is for room ${JSON.stringify(payload.aud)}, not ${JSON.stringify(room)}`);
  }
  const { iss, aud, sub, iat, nbf, exp, jti } = payload;
  return { iss, aud, sub, iat, nbf, exp, jti };
}

function translate(error) {
  if (error instanceof joseErrors.JWTExpired) return new AdmissionError("expired", "the admission token has expired", { cause: error });
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") return new AdmissionError("not-yet-valid", "the admission token is not valid yet", { cause: error });
    if (error.claim === "iss") return new AdmissionError("wrong-issuer", "the admission token is from another issuer", { cause: error });
    return new AdmissionError("malformed", `the admission token's ${error.claim} claim is missing or invalid`, { cause: error });
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new AdmissionError("bad-signature", "the admission token's signature does not verify", { cause: error });
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey) {
    return new AdmissionError("bad-signature", "the admission token is signed by a key the node does not publish", { cause: error });
  }
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid || isFetchFailure(error)) {
    return new AdmissionError("jwks-unavailable", `the node's key set could not be read: ${error.message}`, { cause: error });
  }
  if (error instanceof joseErrors.JOSEError) return new AdmissionError("malformed", `the admission token is invalid: ${error.message}`, { cause: error });
  return error; // not about the token: a bug, let it show
}

function isFetchFailure(error) {
  // Under Node, jose 5 reads the key set with node:http: a refused or reset connection is a
  // system error (`code` ECONNREFUSED, ENOTFOUND, ...), an answer other than 200 a JOSEError. In
  // runtimes where it uses fetch, a failed fetch is a TypeError.
  if (error instanceof joseErrors.JOSEError) return /JSON Web Key Set HTTP response/.test(error.message);
  return error instanceof TypeError || (typeof error?.code === "string" && /^E[A-Z]+$/.test(error.code));
}

function bearerToken(headers) {
  const value = headers.authorization;
  if (typeof value !== "string") return undefined;
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(value);
  return match ? match[1] : "";
}

function queryToken(url) {
  const questionMark = typeof url === "string" ? url.indexOf("?") : -1;
  if (questionMark < 0) return undefined;
  const value = new URLSearchParams(url.slice(questionMark + 1)).get(TOKEN_PARAMETER_NAME);
  return value === null ? undefined : value;
}

function cookieToken(headers, name) {
  const header = headers.cookie;
  if (typeof header !== "string") return undefined;
  for (const part of header.split(";")) {
    const equals = part.indexOf("=");
    if (equals < 0 || part.slice(0, equals).trim() !== name) continue;
    const raw = part.slice(equals + 1).trim();
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw;
    }
  }
  return undefined;
}

function problem(res, status, detail, challenge) {
  const titles = { 401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable" };
  res.statusCode = status;
  res.setHeader("Content-Type", "application/problem+json");
  res.setHeader("Cache-Control", "no-store");
  if (challenge) res.setHeader("WWW-Authenticate", challenge);
  if (status === 503) res.setHeader("Retry-After", String(LIMITS.jwksUnavailableRetryAfterSeconds));
  res.end(JSON.stringify({ type: "about:blank", title: titles[status], status, detail }));
}

/**
 * Express (or connect) middleware: lets a request through only with a valid admission token for
 * the room, taken from the first of `Authorization: Bearer <token>`, the query parameter
 * `waitroomToken` (unless `queryParameter: false`) and the cookie `waitroomToken` (`cookieName`
 * to rename it, `false` to turn it off). On success the claims are `req.admission` (and
 * `res.locals.admission` under Express). Otherwise it answers an `application/problem+json`
 * error: 401 (with `WWW-Authenticate: Bearer`) without a token or with an invalid one, 403 for a
 * valid token of another room, 503 when the node's key set cannot be read.
 *
 * `room` is a room id, or a function of the request that returns one (a service behind several
 * rooms). The other options are verifyAdmission's.
 */
export function requireAdmission(options = {}) {
  const { room } = options;
  if (typeof room !== "function") checkRoom(room);
  remoteKeySet(options.jwksUrl); // checks the URL now, at start-up, not on the first request
  const queryParameter = options.queryParameter !== false;
  const cookieName = options.cookieName === undefined ? TOKEN_PARAMETER_NAME : options.cookieName;

  return function waitroomAdmission(req, res, next) {
    const headers = req.headers || {};
    let token = bearerToken(headers);
    if (token === undefined && queryParameter) token = queryToken(req.originalUrl || req.url);
    if (token === undefined && cookieName) token = cookieToken(headers, cookieName);
    if (token === undefined || token === "") {
      const places = ["the header `Authorization: Bearer <token>`"];
      if (queryParameter) places.push(`the query parameter \`${TOKEN_PARAMETER_NAME}\``);
      if (cookieName) places.push(`the cookie \`${cookieName}\``);
      problem(res, 401, `no admission token in ${places.join(" or ")}`, "Bearer");
      return;
    }
    let roomId;
    try {
      roomId = typeof room === "function" ? room(req) : room;
      checkRoom(roomId);
    } catch (error) {
      next(error);
      return;
    }
    verifyAdmission(token, { ...options, room: roomId }).then(
      (claims) => {
        req.admission = claims;
        if (res.locals && typeof res.locals === "object") res.locals.admission = claims;
        next();
      },
      (error) => {
        if (!(error instanceof AdmissionError)) {
          next(error);
          return;
        }
        const challenge =
          error.status === 401 ? 'Bearer error="invalid_token"' : error.status === 403 ? 'Bearer error="insufficient_scope"' : null;
        problem(res, error.status, error.message, challenge);
      },
    );
  };
}
