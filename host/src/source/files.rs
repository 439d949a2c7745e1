//! JSONL input for `replay`: one message per line, the line number as its offset.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context;

/// Reads one input file line by line into a reused buffer.
pub struct JsonlFile {
    reader: BufReader<File>,
    line: Vec<u8>,
    /// Number of the line in `line` (0-based): its "offset".
    pub offset: i64,
    name: String,
}

impl JsonlFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(JsonlFile {
            reader: BufReader::with_capacity(1 << 20, file),
            line: Vec::new(),
            offset: -1,
            name: path.display().to_string(),
        })
    }

    /// The next line without its line ending, or `None` at the end of the file. A final line
    /// ending does not make an empty message; an empty line elsewhere is an (invalid) message.
    pub fn next_line(&mut self) -> anyhow::Result<Option<&[u8]>> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line).with_context(|| format!("reading {}", self.name))?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
        }
        self.offset += 1;
        Ok(Some(&self.line))
    }
}
