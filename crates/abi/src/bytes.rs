//! Byte helpers for hot paths, shared by the host and the plugins.

/// Byte equality for the short strings of the hot path (field names, ids, labels) without a call
/// to `memcmp`, which was a tenth of the host's profile, and in WebAssembly is a byte loop behind
/// a function call: up to 32 bytes are overlapping 8-byte loads.
#[inline]
pub fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    match n {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=32 => {
            word(a, 0) == word(b, 0)
                && word(a, 8) == word(b, 8)
                && word(a, n - 16) == word(b, n - 16)
                && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// Whether every byte is ASCII, 8 bytes at a time. `<[u8]>::is_ascii` goes a `usize` at a
/// time, which in a WebAssembly guest is 4 bytes, and it was most of the batch reader's cost
/// there (a region of an event's five strings, ~60 bytes, is checked per event).
#[inline]
pub fn is_ascii(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    let high = words.iter().fold(0u64, |acc, &word| acc | u64::from_le_bytes(word));
    let tail = tail.iter().fold(0u8, |acc, &b| acc | b);
    high & 0x8080_8080_8080_8080 == 0 && tail < 0x80
}
