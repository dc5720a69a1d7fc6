// The waiting page's challenge solver (docs/api.md, "Challenges"), run in a Web Worker so the
// page stays responsive while it works. Given {challenge, bits}, it counts up in decimal from 0
// until SHA-256(challenge ‖ counter) starts with `bits` zero bits, posting {tries} now and then
// and {solution, tries, ms} at the end.
//
// SHA-256 is written out here rather than taken from crypto.subtle.digest: that is asynchronous,
// one promise per call, and costs several microseconds a hash where a million hashes are needed;
// here the challenge's first 64 bytes are hashed once (its "midstate") and each try costs one
// 64-byte block, a few hundred nanoseconds. Self-contained: no import, no network (the page's
// Content-Security-Policy allows this script from the node alone).
"use strict";

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

/** SHA-256(prefix ‖ counter) for counters from 0: the first whose digest starts with `bits`
 *  zero bits. `prefix` is ASCII (a challenge). Calls `progress(tries)` every 2^18 tries. */
function solve(prefix, bits, progress) {
  const full = prefix.length - (prefix.length % 64);
  const mid = new Int32Array(INITIAL);
  const bytes = new Uint8Array(prefix.length);
  for (let i = 0; i < prefix.length; i++) bytes[i] = prefix.charCodeAt(i) & 0xff;
  for (let at = 0; at < full; at += 64) compress(mid, bytes, at);
  const rest = prefix.length - full;
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
    if (((n + 1) & 0x3ffff) === 0) progress(n + 1);
  }
  throw new Error("no solution");
}

if (typeof self !== "undefined" && typeof self.postMessage === "function") {
  self.onmessage = (event) => {
    const { challenge, bits } = event.data;
    const started = performance.now();
    try {
      const found = solve(challenge, bits, (tries) => self.postMessage({ tries }));
      self.postMessage({ ...found, ms: performance.now() - started });
    } catch (error) {
      self.postMessage({ error: String(error) });
    }
  };
}
if (typeof module !== "undefined") module.exports = { solve };
