//! Where input comes from: Kafka ([`kafka`]) or JSONL files for `replay` ([`files`]).

pub mod files;
pub mod kafka;
