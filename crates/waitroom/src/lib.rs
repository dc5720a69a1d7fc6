//! # waitroom
//!
//! A virtual waiting room for ticket on-sales. Each room is a deterministic state machine
//! (`waitroom-core`) applied to an ordered log; every node applies the whole log and answers
//! status polls from memory (see `docs/architecture.md` in the repository).
//!
//! # Layout
//! - `node`: the runtime: applier, appender (group commit), heartbeat batching, ticker,
//!   read-your-writes waits.
//! - `http`: the axum API of `docs/api.md`, the waiting page, metrics, OpenAPI.
//! - `tokens`: admission tokens (EdDSA JWTs) and the JWKS.
//! - `challenge`: join challenges (a proof of work a room can ask for), HMAC-signed with a key
//!   derived from the token signing key.
//! - `verifier`: the external join verifier (`--join-verifier-url`).
//! - `ids`: the text form of session ids (which carries the room's tag).
//! - `limits`: every limit of the node and the HTTP layer, tied to the log's and the core's.
//! - `metrics`: Prometheus metrics.
//! - `connections`: serving client connections, within their bounds (in total, per address) and
//!   timeouts (header, idle, request).
//! - `server`: `waitroom serve` — [`server::run`] takes a listener and a shutdown future.
//! - `demo`: `waitroom demo` — a node with a demo room, a simulated crowd and a seat-selection
//!   page that verifies admission tokens.
//! - `dump`: `waitroom log dump` — a room's records as JSON lines, from any backend (audit).

pub mod challenge;
pub mod connections;
pub mod demo;
pub mod dump;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod server;
pub mod tokens;
pub mod verifier;

pub use server::{ServeOptions, run};
