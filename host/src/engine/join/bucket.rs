//! A minute of the join's state, packed for memory: the impressions of that minute of event
//! time, and the ids of its clicks.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::index::Index;
use super::record::{self, PackedId};
use super::{BUCKET_MS, ImpressionInfo};
use crate::bytes::short_eq;
use crate::event::Impression;

const _: () = assert!(BUCKET_MS <= u16::MAX as i64 + 1, "a time within a bucket is a u16");

/// The impressions of one bucket of event time: each one a record in `records` (see
/// [`record`]), found through `index` by id. The labels (campaign, ad, device, browser) repeat
/// across impressions, so each distinct combination is stored once per bucket and a record
/// holds its number. About 16 bytes plus the index's 5 per impression with ids like `i1234567`
/// (a UUID's record takes 7 more), against ~150 for a map of owned strings.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    records: Vec<u8>,
    index: Index,
    labels: LabelSets,
}

impl Bucket {
    /// Empties the bucket for reuse, keeping its allocations, sized for at least
    /// `(bytes, impressions)`.
    pub fn recycle(&mut self, (bytes, impressions): (usize, usize)) {
        self.records.clear();
        self.records.reserve(bytes + bytes / 8);
        self.index.clear();
        self.index.reserve(impressions + impressions / 32, |_| unreachable!("the index is empty"));
        self.labels.clear();
    }

    /// Its size, to make the next bucket like it: `(bytes, impressions)`.
    pub fn size(&self) -> (usize, usize) {
        (self.records.len(), self.index.len())
    }

    /// Adds an impression (an id seen before in this bucket now finds the newer one).
    pub fn insert(&mut self, hasher: &DefaultHashBuilder, start_ms: i64, imp: &Impression<'_>) {
        let labels = self.labels.number(hasher, [&imp.campaign_id, &imp.ad_id, &imp.device_type, &imp.browser]);
        let id = PackedId::of(imp.impression_id.as_bytes());
        let at = u32::try_from(self.records.len())
            .expect("less than 4 GiB of impressions per minute of event time (the index asks for 2)");
        let offset_ms = u16::try_from(imp.event_time_ms - start_ms).expect("the time lies in the bucket");
        record::write(&mut self.records, &id, offset_ms, labels, imp.cost);
        let records = &self.records;
        self.index.upsert(
            id.hash(hasher),
            at,
            |r| record::id(records, r).0.same(&id),
            |r| record::id(records, r).0.hash(hasher),
        );
    }

    pub fn get(&self, hash: u64, id: &PackedId<'_>, start_ms: i64) -> Option<ImpressionInfo<'_>> {
        let at = self.index.find(hash, |r| record::id(&self.records, r).0.same(id))?;
        let r = record::read(&self.records, at);
        let [campaign_id, ad_id, device_type, browser] = self.labels.get(r.labels);
        Some(ImpressionInfo {
            event_time_ms: start_ms + i64::from(r.offset_ms),
            cost: r.cost,
            campaign_id,
            ad_id,
            device_type,
            browser,
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }
}

/// The distinct combinations of the four labels in a bucket, each stored once as one run of
/// text, so that finding one costs one hash and one comparison rather than four of each.
#[derive(Debug, Default)]
struct LabelSets {
    text: String,
    /// Per combination, by number: where its text starts, and where each of its labels ends
    /// counted from there (a label is at most `MAX_FIELD_BYTES` long).
    spans: Vec<(u32, [u16; 4])>,
    /// Combination numbers, hashed by text and ends.
    index: HashTable<u32>,
    /// The combination being looked up (kept to save an allocation per impression).
    scratch: String,
}

impl LabelSets {
    fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
        self.index.clear();
    }

    fn text_of(&self, n: u32) -> (&str, [u16; 4]) {
        let (start, ends) = self.spans[n as usize];
        (&self.text[start as usize..start as usize + usize::from(ends[3])], ends)
    }

    fn number(&mut self, hasher: &DefaultHashBuilder, labels: [&str; 4]) -> u32 {
        self.scratch.clear();
        let mut ends = [0u16; 4];
        for (end, label) in ends.iter_mut().zip(labels) {
            self.scratch.push_str(label);
            *end = u16::try_from(self.scratch.len()).expect("labels are at most MAX_FIELD_BYTES long");
        }
        let hash = hasher.hash_one((self.scratch.as_bytes(), ends));
        let found = self.index.find(hash, |&n| {
            let (text, known) = self.text_of(n);
            known == ends && short_eq(text.as_bytes(), self.scratch.as_bytes())
        });
        if let Some(&n) = found {
            return n;
        }
        let n = u32::try_from(self.spans.len()).expect("fewer than 2^32 label combinations per minute");
        let start = u32::try_from(self.text.len()).expect("less than 4 GiB of labels per minute");
        self.text.push_str(&self.scratch);
        self.spans.push((start, ends));
        let LabelSets { text, spans, index, .. } = self;
        index.insert_unique(hash, n, |&m| {
            let (start, ends) = spans[m as usize];
            hasher.hash_one((&text.as_bytes()[start as usize..start as usize + usize::from(ends[3])], ends))
        });
        n
    }

    fn get(&self, n: u32) -> [&str; 4] {
        let (text, ends) = self.text_of(n);
        let e = ends.map(usize::from);
        [&text[..e[0]], &text[e[0]..e[1]], &text[e[1]..e[2]], &text[e[2]..e[3]]]
    }
}

/// The ids of the clicks of one bucket of event time, each with the time of the first click
/// seen with it (see [`super::Join::first_click`]): a record each (see [`record`]), found
/// through `index`.
#[derive(Debug, Default)]
pub(super) struct ClickIds {
    records: Vec<u8>,
    index: Index,
}

impl ClickIds {
    /// `false` if this id came before in this bucket at this time; else `true`, and the id is
    /// remembered with its time if it is new.
    pub fn first(&mut self, hasher: &DefaultHashBuilder, click_id: &str, offset_ms: u16) -> bool {
        let id = PackedId::of(click_id.as_bytes());
        let hash = id.hash(hasher);
        let records = &self.records;
        if let Some(at) = self.index.find(hash, |r| record::id(records, r).0.same(&id)) {
            return record::id(records, at).1 != offset_ms;
        }
        let at = u32::try_from(self.records.len())
            .expect("less than 4 GiB of click ids per minute of event time (the index asks for 2)");
        record::write_id(&mut self.records, &id, offset_ms, 0);
        let records = &self.records;
        self.index.upsert(hash, at, |_| false, |r| record::id(records, r).0.hash(hasher));
        true
    }
}
