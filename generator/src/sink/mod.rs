//! Where messages go: Kafka ([`kafka`]), JSONL files ([`jsonl`]), or both ([`Tee`]).

pub mod jsonl;
pub mod kafka;

use std::time::Duration;

use anyhow::Result;

use crate::model::Topic;

/// A destination for messages, written in emission order.
pub trait Sink: Send {
    /// Writes one message; it may be buffered until [`Sink::finish`].
    fn write(&mut self, topic: Topic, key: &[u8], payload: &[u8]) -> Result<()>;

    /// Waits for `duration` while pacing; a producer uses the time to serve its delivery reports.
    fn idle(&mut self, duration: Duration) -> Result<()> {
        std::thread::sleep(duration);
        Ok(())
    }

    /// Makes everything written durable, or fails saying what was lost.
    fn finish(&mut self) -> Result<()>;
}

/// Writes every message to both sinks: Kafka and the JSONL record of what was produced.
pub struct Tee<A, B>(pub A, pub B);

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    fn write(&mut self, topic: Topic, key: &[u8], payload: &[u8]) -> Result<()> {
        self.0.write(topic, key, payload)?;
        self.1.write(topic, key, payload)
    }

    fn idle(&mut self, duration: Duration) -> Result<()> {
        self.0.idle(duration)
    }

    fn finish(&mut self) -> Result<()> {
        self.0.finish()?;
        self.1.finish()
    }
}
