//! A strict reading of SPEC.md's input tables, for tests: is this message a valid event on this topic?
//!
//! Independent of the encoder on purpose — it parses with `serde_json` and the RFC 3339 parser — so that the
//! tests catch an encoder that drifts from the contract.

use serde_json::{Map, Value};

use crate::model::Topic;
use crate::time::{EpochMillis, VALID_EVENT_TIMES, parse_rfc3339};

/// What the tests need of a valid event.
#[derive(Clone, Debug, PartialEq)]
pub struct Valid {
    pub impression_id: String,
    pub click_id: Option<String>,
    pub user_id: String,
    pub event_time: EpochMillis,
}

pub fn check(topic: Topic, payload: &[u8]) -> Result<Valid, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|error| format!("not JSON: {error}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let string = |field: &str| -> Result<String, String> {
        match object.get(field) {
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(format!("{field} is not a string: {other}")),
            None => Err(format!("{field} is missing")),
        }
    };
    let impression_id = string("impression_id")?;
    if impression_id.is_empty() {
        return Err("empty impression_id".into());
    }
    let user_id = string("user_id")?;
    let event_time = event_time(object)?;
    let click_id = match topic {
        Topic::Impressions => {
            for field in ["campaign_id", "ad_id", "browser"] {
                string(field)?;
            }
            if string("device_type")?.is_empty() {
                return Err("empty device_type".into());
            }
            match object.get("cost").map(Value::as_f64) {
                Some(Some(cost)) if cost >= 0.0 => {}
                other => return Err(format!("cost is not a non-negative number: {other:?}")),
            }
            None
        }
        Topic::Clicks => Some(string("click_id")?),
    };
    Ok(Valid { impression_id, click_id, user_id, event_time })
}

fn event_time(object: &Map<String, Value>) -> Result<EpochMillis, String> {
    let instant = match object.get("event_timestamp") {
        Some(Value::String(text)) => parse_rfc3339(text).map_err(|error| format!("{error:#}"))?,
        Some(Value::Number(number)) => number.as_i64().ok_or(format!("{number} is not an integer"))?,
        other => {
            return Err(format!("event_timestamp is neither a string nor an integer: {other:?}"));
        }
    };
    if !VALID_EVENT_TIMES.contains(&instant) {
        return Err(format!("event_timestamp {instant} is out of range"));
    }
    Ok(instant)
}
