//! What the adstream host and its aggregation plugins share, besides the WIT interface.
//!
//! - [`bytes`]: short byte compares for hot paths.
//! - [`batch`]: the compact byte encoding of event batches that crosses the component boundary
//!   (the host writes it, plugins read it).
//! - [`time`]: epoch-millisecond timestamps to and from RFC 3339, without a date crate, so that
//!   plugins stay small.
//! - [`json`]: the little JSON writing a plugin needs for its output values.
//! - [`sdk`]: the per-window accumulator store every plugin needs, so that a plugin is only its
//!   aggregation.
//! - [`state`]: reading and writing exported accumulators.
//!
//! The crate has no dependencies and compiles for the host and for `wasm32-wasip2` alike.

pub mod batch;
pub mod bytes;
pub mod json;
pub mod sdk;
pub mod state;
pub mod time;
