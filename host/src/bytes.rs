//! Byte helpers: short compares for the hot paths (the decoder's field names, the join's ids and
//! labels), and hex for hashes.

pub use adstream_abi::bytes::short_eq;

/// Lower-case hex, for hashes (plugin files, truncated messages).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
