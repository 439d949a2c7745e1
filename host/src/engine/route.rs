//! Copies of input messages the pipeline does not count: late ones to the late topic, invalid
//! ones to the dead-letter topic, each with where it came from and why.

use sha2::Digest as _;

use super::{Input, PartitionInfo, Sink};
use crate::sink::topics::record_bytes;

/// A key longer than this is cut to it in a truncated copy.
const KEPT_KEY_BYTES: usize = 1024;

/// Where a copied message came from, as headers.
pub fn source_headers<'a>(info: &'a PartitionInfo, offset: &'a str, partition: &'a str) -> [(&'a str, &'a [u8]); 3] {
    [
        ("source-topic", info.topic.as_bytes()),
        ("source-partition", partition.as_bytes()),
        ("source-offset", offset.as_bytes()),
    ]
}

/// Sends a copy of `input` (from `info`) to `topic` with the headers `reason`, `reason-detail`
/// and the source headers; see [`send_copy`].
pub fn copy(
    topic: &str,
    input: Input<'_>,
    info: &PartitionInfo,
    reason: &str,
    detail: &str,
    truncated: &mut u64,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let (offset, partition) = (input.offset.to_string(), info.partition.to_string());
    let source = source_headers(info, &offset, &partition);
    let headers =
        [("reason", reason.as_bytes()), ("reason-detail", detail.as_bytes()), source[0], source[1], source[2]];
    send_copy(topic, input, info, &headers, truncated, sink)
}

/// Sends a copy of an input message (late or dead-lettered) to `topic`, whole if the topic
/// takes it; otherwise as much of it as fits, with headers `truncated: true`,
/// `original-size` (bytes) and `original-sha256` (hex) beside the usual ones, so that
/// nothing the input topics accept can make the broker refuse the transaction. Counted in
/// `truncated`, on top of the late or dead-letter count.
pub fn send_copy(
    topic: &str,
    input: Input<'_>,
    info: &PartitionInfo,
    headers: &[(&str, &[u8])],
    truncated: &mut u64,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let Some(limit) = sink.record_limit(topic).filter(|&l| record_bytes(input.key, input.payload, headers) > l) else {
        return sink.send(topic, input.key, input.payload, headers);
    };
    *truncated += 1;
    let size = input.payload.len().to_string();
    let sha = crate::bytes::hex(&sha2::Sha256::digest(input.payload));
    let mut headers = headers.to_vec();
    headers.extend([
        ("truncated", b"true".as_slice()),
        ("original-size", size.as_bytes()),
        ("original-sha256", sha.as_bytes()),
    ]);
    let key = input.key.map(|k| &k[..k.len().min(KEPT_KEY_BYTES)]);
    // The longest prefix that fits (record_bytes grows by at least one per byte kept).
    let mut kept = input.payload.len();
    while kept > 0 {
        let over = record_bytes(key, &input.payload[..kept], &headers).saturating_sub(limit);
        if over == 0 {
            break;
        }
        kept = kept.saturating_sub(over);
    }
    tracing::warn!(source_topic = %info.topic, partition = info.partition, offset = input.offset, %topic, size = input.payload.len(), kept, limit, "copy truncated: the message is larger than the topic takes");
    sink.send(topic, key, &input.payload[..kept], &headers)
}
