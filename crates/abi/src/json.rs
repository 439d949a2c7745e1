//! The little JSON writing a plugin needs for its output values, without serde.

use std::fmt::Write;

/// Appends `s` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).expect("String writes cannot fail"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a finite `f64` as a JSON number in its shortest round-trip form, `null` otherwise.
pub fn push_f64(out: &mut String, x: f64) {
    if x.is_finite() {
        // Rust's `Display` for f64 is the shortest representation that reads back exactly, and
        // never uses an exponent, so it is always a valid JSON number.
        write!(out, "{x}").expect("String writes cannot fail");
    } else {
        out.push_str("null");
    }
}

/// Writes a JSON object field by field: `Obj::new(&mut s).str("a", "x").u64("n", 3).end()`.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_str(self.out, key);
        self.out.push(':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(self.out, value);
        self
    }

    /// A timestamp field, written as RFC 3339 UTC with milliseconds.
    pub fn time(mut self, key: &str, ms: i64) -> Self {
        self.key(key);
        self.out.push('"');
        crate::time::write_rfc3339_millis(self.out, ms);
        self.out.push('"');
        self
    }

    pub fn u64(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        write!(self.out, "{value}").expect("String writes cannot fail");
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A number, or `null` for `None` and non-finite values.
    pub fn f64(mut self, key: &str, value: Option<f64>) -> Self {
        self.key(key);
        match value {
            Some(x) => push_f64(self.out, x),
            None => self.out.push_str("null"),
        }
        self
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_objects() {
        let mut s = String::new();
        Obj::new(&mut s)
            .str("id", "a\"b\\\u{1}é")
            .u64("n", 3)
            .bool("b", true)
            .f64("r", Some(0.1 + 0.2))
            .f64("z", None)
            .time("t", 0)
            .end();
        assert_eq!(
            s,
            r#"{"id":"a\"b\\\u0001é","n":3,"b":true,"r":0.30000000000000004,"z":null,"t":"1970-01-01T00:00:00.000Z"}"#
        );
        let mut tiny = String::new();
        push_f64(&mut tiny, 1e-7);
        assert_eq!(tiny, "0.0000001");
    }
}
