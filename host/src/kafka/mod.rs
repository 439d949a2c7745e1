//! What the host's Kafka clients share: how to reach and authenticate to the cluster, the
//! client context, what an error means, and topic administration. The consumer and the
//! producer themselves are [`crate::source::kafka`] and [`crate::sink::kafka`].
//!
//! - [`settings`]: brokers, TLS, SASL, librdkafka pass-through properties; secrets redacted.
//! - [`context`]: librdkafka's errors and logs into `tracing`, fatal errors noticed at once,
//!   OAUTHBEARER tokens from a file.
//! - [`failure`]: which errors end the host (and what to fix) and which are waited out.
//! - [`fetched`]: the assigned partitions' messages, taken from librdkafka in batches.
//! - [`group`]: membership in the consumer group; rebalances carried out by the pipeline thread.
//! - [`polled`]: the producer's delivery reports served by a thread asleep while there are none.
//! - [`admin`]: topic sizes (`max.message.bytes`) and creating missing output topics.
//! - [`aside`]: clients closed on threads of their own, and the process's end waiting for them.

pub mod admin;
pub mod aside;
pub mod context;
pub mod failure;
pub mod fetched;
pub mod group;
pub mod polled;
pub mod settings;
pub mod state;

pub use context::{Health, HostContext};
pub use failure::Failure;
pub use settings::{ClientSettings, Role};
