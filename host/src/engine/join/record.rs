//! How the join packs what it keeps into bytes.
//!
//! An impression's record, in a bucket's bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | forms: the id's (high four bits) and the cost's (low four bits) |
//! | 2 | event time within the bucket in ms, `u16` little-endian (a bucket is a minute) |
//! | 16, or length and text | the id: a UUID as the 16 bytes it spells; any other id as its length (varint) and its bytes |
//! | 1–5 | the label number (varint) |
//! | 1–9, or 8 | the cost: `n` (varint) for a cost of exactly `n / 10^scale`, the scale being its form; else the `f64`'s 8 bytes |
//!
//! A click id's record is the first three fields (its form's cost bits unused). Varints are
//! LEB128: seven bits a byte, the high bit set on every byte but the last.
//!
//! Every form is exact: a record gives back the id's bytes and the cost's bits it was given
//! (a cost is written as a decimal only after checking that the decimal reads back to the same
//! `f64`). The packing saves about a third of the join's memory on typical input: `0.004237`
//! takes 2 bytes rather than 8, a UUID 16 rather than 36, a minute's time 2 rather than 4.

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

use crate::bytes::short_eq;

/// An id as the join keeps it, compared and hashed in this form.
#[derive(Clone, Copy, Debug)]
pub(super) enum PackedId<'a> {
    /// Any id but a UUID, as it came.
    Text(&'a [u8]),
    /// A UUID in its text form (hex digits in groups of 8-4-4-4-12, joined by dashes), as the 16
    /// bytes it spells; `upper` if its letters are capitals. With letters of both cases an id
    /// is `Text`, so that every id has exactly one packed form.
    Uuid { upper: bool, bytes: [u8; 16] },
}

const ID_TEXT: u8 = 0;
const ID_UUID: u8 = 1;
const ID_UUID_UPPER: u8 = 2;
const COST_RAW: u8 = 0xf;
const TWO_52: f64 = 4_503_599_627_370_496.0;
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

impl<'a> PackedId<'a> {
    pub fn of(id: &'a [u8]) -> Self {
        uuid(id).map_or(PackedId::Text(id), |(upper, bytes)| PackedId::Uuid { upper, bytes })
    }

    pub fn hash(&self, hasher: &DefaultHashBuilder) -> u64 {
        match self {
            PackedId::Text(text) => hasher.hash_one(text),
            PackedId::Uuid { upper, bytes } => hasher.hash_one((upper, bytes)),
        }
    }

    pub fn same(&self, other: &PackedId<'_>) -> bool {
        match (self, other) {
            (PackedId::Text(a), PackedId::Text(b)) => short_eq(a, b),
            (PackedId::Uuid { upper: u, bytes: a }, PackedId::Uuid { upper: v, bytes: b }) => u == v && a == b,
            _ => false,
        }
    }

    fn form(&self) -> u8 {
        match self {
            PackedId::Text(_) => ID_TEXT,
            PackedId::Uuid { upper: false, .. } => ID_UUID,
            PackedId::Uuid { upper: true, .. } => ID_UUID_UPPER,
        }
    }

    /// The id's text, as it came (for tests: the join never needs it back).
    #[cfg(test)]
    pub fn text(&self) -> Vec<u8> {
        match self {
            PackedId::Text(text) => text.to_vec(),
            PackedId::Uuid { upper, bytes } => {
                let digits: &[u8; 16] = if *upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
                let mut out = Vec::with_capacity(36);
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        out.push(b'-');
                    }
                    out.extend([digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]]);
                }
                out
            }
        }
    }
}

/// The 16 bytes a UUID's text spells, and whether its letters are capitals.
fn uuid(id: &[u8]) -> Option<(bool, [u8; 16])> {
    if id.len() != 36 || id[8] != b'-' || id[13] != b'-' || id[18] != b'-' || id[23] != b'-' {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut seen = 0u8;
    for (byte, &at) in bytes.iter_mut().zip(&UUID_BYTES) {
        let (hi, lo) = (HEX[usize::from(id[at])], HEX[usize::from(id[at + 1])]);
        seen |= hi | lo;
        *byte = (hi & 0xf) << 4 | (lo & 0xf);
    }
    let (upper, lower) = (seen & HEX_UPPER != 0, seen & HEX_LOWER != 0);
    if seen & HEX_NOT != 0 || (upper && lower) {
        return None;
    }
    Some((upper, bytes))
}

/// Where each of a UUID's 16 bytes starts in its text.
const UUID_BYTES: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
const HEX_LOWER: u8 = 0x10;
const HEX_UPPER: u8 = 0x20;
const HEX_NOT: u8 = 0x80;

/// Per byte: its value as a hex digit (low four bits), whether it is a lower- or upper-case
/// letter, or `HEX_NOT`.
const HEX: [u8; 256] = {
    let mut table = [HEX_NOT; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => (b - b'a' + 10) | HEX_LOWER,
            b'A'..=b'F' => (b - b'A' + 10) | HEX_UPPER,
            _ => HEX_NOT,
        };
        c += 1;
    }
    table
};

/// A cost as `(scale, n)` with `cost == n / 10^scale` exactly, the smallest such scale; or
/// `(COST_RAW, bits)`.
fn pack_cost(cost: f64) -> (u8, u64) {
    for (scale, &power) in POW10.iter().enumerate() {
        let scaled = cost * power;
        if !(0.0..=9.0e15).contains(&scaled) {
            break; // negative, not a number, or beyond the integers an f64 holds exactly
        }
        // Rounded by conversion: `f64::round` is a library call on baseline x86-64, made once per
        // scale tried (seven for a cost with six decimals). From 2^52 on every f64 is an integer
        // (and adding 0.5 would round).
        let n = if scaled >= TWO_52 { scaled } else { ((scaled + 0.5) as u64) as f64 };
        // The first test only saves divisions; the second decides.
        if (scaled - n).abs() <= 1e-6 && ((n as u64) as f64 / power).to_bits() == cost.to_bits() {
            return (scale as u8, n as u64);
        }
    }
    (COST_RAW, cost.to_bits())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
    }
    v
}

/// Appends a click id's record (also the start of an impression's).
pub(super) fn write_id(out: &mut Vec<u8>, id: &PackedId<'_>, offset_ms: u16, cost_form: u8) {
    out.push(id.form() << 4 | cost_form);
    out.extend_from_slice(&offset_ms.to_le_bytes());
    match id {
        PackedId::Text(text) => {
            put_varint(out, text.len() as u64);
            out.extend_from_slice(text);
        }
        PackedId::Uuid { bytes, .. } => out.extend_from_slice(bytes),
    }
}

/// Appends an impression's record.
pub(super) fn write(out: &mut Vec<u8>, id: &PackedId<'_>, offset_ms: u16, labels: u32, cost: f64) {
    let (cost_form, n) = pack_cost(cost);
    write_id(out, id, offset_ms, cost_form);
    put_varint(out, labels.into());
    if cost_form == COST_RAW {
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        put_varint(out, n);
    }
}

/// The id and time of the record at `at`, and where the id ends.
pub(super) fn id(records: &[u8], at: u32) -> (PackedId<'_>, u16, usize) {
    let r = &records[at as usize..];
    let offset_ms = u16::from_le_bytes([r[1], r[2]]);
    let mut end = 3;
    let id = match r[0] >> 4 {
        ID_TEXT => {
            let len = get_varint(r, &mut end) as usize;
            end += len;
            PackedId::Text(&r[end - len..end])
        }
        form => {
            end += 16;
            PackedId::Uuid { upper: form == ID_UUID_UPPER, bytes: r[3..19].try_into().expect("16 bytes") }
        }
    };
    (id, offset_ms, at as usize + end)
}

/// What an impression's record at `at` holds besides its id.
pub(super) struct Fields {
    pub offset_ms: u16,
    pub labels: u32,
    pub cost: f64,
}

pub(super) fn read(records: &[u8], at: u32) -> Fields {
    let (_, offset_ms, mut end) = id(records, at);
    let labels = u32::try_from(get_varint(records, &mut end)).expect("written from a u32");
    let cost = match records[at as usize] & 0xf {
        COST_RAW => f64::from_le_bytes(records[end..end + 8].try_into().expect("8 bytes")),
        scale => (get_varint(records, &mut end) as f64) / POW10[usize::from(scale)],
    };
    Fields { offset_ms, labels, cost }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(id: &[u8], offset_ms: u16, labels: u32, cost: f64) -> (Vec<u8>, u16, u32, u64, usize) {
        let mut out = vec![7, 7]; // a record that does not start at 0
        write(&mut out, &PackedId::of(id), offset_ms, labels, cost);
        let (back, time, _) = super::id(&out, 2);
        let f = read(&out, 2);
        assert_eq!(time, f.offset_ms);
        (back.text(), f.offset_ms, f.labels, f.cost.to_bits(), out.len() - 2)
    }

    #[test]
    fn packs_the_usual_forms_small_and_exactly() {
        let uuid = b"3f2504e0-4f89-11d3-9a0c-0305e82c3301";
        assert_eq!(round_trip(uuid, 59_999, 300, 0.004237), (uuid.to_vec(), 59_999, 300, 0.004237f64.to_bits(), 23));
        let upper = b"3F2504E0-4F89-11D3-9A0C-0305E82C3301";
        assert_eq!(round_trip(upper, 0, 0, 1.5).0, upper);
        let mixed = b"3F2504E0-4f89-11d3-9a0c-0305e82c3301";
        assert!(matches!(PackedId::of(mixed), PackedId::Text(_)), "one packed form per id");
        assert_eq!(round_trip(b"i1234567", 1, 1, 0.0001), (b"i1234567".to_vec(), 1, 1, 0.0001f64.to_bits(), 14));
        for cost in [-0.0, -1.5, f64::NAN, f64::INFINITY, 1e300, 0.1 + 0.2, f64::MIN_POSITIVE] {
            let (.., bits, len) = round_trip(b"x", 0, 0, cost);
            assert_eq!(bits, cost.to_bits(), "{cost} comes back as it went");
            assert_eq!(len, 1 + 2 + 2 + 1 + 8, "{cost} is kept raw");
        }
    }

    proptest! {
        #[test]
        fn every_record_reads_back_as_written(id in prop::collection::vec(any::<u8>(), 0..300), offset_ms: u16,
                                              labels: u32, cost_bits: u64, decimal in 0u64..10_000_000_000, scale in 0usize..10) {
            for cost in [f64::from_bits(cost_bits), decimal as f64 / POW10[scale]] {
                let (back, t, l, c, _) = round_trip(&id, offset_ms, labels, cost);
                prop_assert_eq!((back, t, l, c), (id.clone(), offset_ms, labels, cost.to_bits()));
            }
        }

        /// A cost written with few decimals packs as a decimal, not as its 8 raw bytes.
        #[test]
        fn decimals_pack_small(decimal in 0u64..1_000_000_000, scale in 0usize..10) {
            let (form, n) = pack_cost(decimal as f64 / POW10[scale]);
            prop_assert!(usize::from(form) <= scale, "{decimal}e-{scale} packed as form {form}");
            prop_assert_eq!(n as f64 / POW10[usize::from(form)], decimal as f64 / POW10[scale]);
        }

        #[test]
        fn uuids_read_back_in_their_case(bytes: [u8; 16], upper: bool) {
            let text = PackedId::Uuid { upper, bytes }.text();
            let packed = PackedId::of(&text);
            prop_assert!(matches!(packed, PackedId::Uuid { .. }), "a UUID packs");
            prop_assert_eq!(packed.text(), text);
        }
    }
}
