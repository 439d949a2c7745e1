//! Where output goes: Kafka topics ([`kafka`]) or a JSONL file for `replay` ([`jsonl`]).

pub mod jsonl;
pub mod kafka;
pub mod topics;
