//! JSONL input for `replay`: one message per line, the line number as its offset.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// Bytes read from the file at a time; a longer line grows the buffer.
const CHUNK: usize = 1 << 20;

/// Reads one input file line by line. Lines are handed out in place, from the buffer the file
/// is read into: only a line that straddles two reads is moved.
pub struct JsonlFile {
    file: File,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// Number of the line last returned (0-based): its "offset".
    pub offset: i64,
    name: String,
}

impl JsonlFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(JsonlFile {
            file,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            offset: -1,
            name: path.display().to_string(),
        })
    }

    /// Reads more of the file after the unread bytes, moving them to the front first.
    fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.file.read(&mut self.buf[self.end..]).with_context(|| format!("reading {}", self.name))?;
        self.eof = n == 0;
        self.end += n;
        Ok(())
    }

    /// The next line without its line ending, or `None` at the end of the file. A final line
    /// ending does not make an empty message; an empty line elsewhere is an (invalid) message.
    pub fn next_line(&mut self) -> anyhow::Result<Option<&[u8]>> {
        let mut searched = 0;
        let line_end = loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start + searched..self.end]) {
                break self.start + searched + i;
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                break self.end;
            }
            searched = self.end - self.start;
            self.fill()?;
        };
        let mut line = &self.buf[self.start..line_end];
        self.start = (line_end + 1).min(self.end);
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        self.offset += 1;
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(content: &[u8]) -> Vec<Vec<u8>> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        let mut file = JsonlFile::open(f.path()).unwrap();
        let mut out = Vec::new();
        while let Some(line) = file.next_line().unwrap() {
            out.push(line.to_vec());
        }
        assert_eq!(file.offset, out.len() as i64 - 1);
        out
    }

    #[test]
    fn splits_lines_across_reads_and_long_lines() {
        assert_eq!(lines(b""), Vec::<Vec<u8>>::new());
        assert_eq!(lines(b"a\n\nb\r\nc"), [b"a".to_vec(), vec![], b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(lines(b"a\n"), [b"a".to_vec()]);
        let long = vec![b'x'; CHUNK * 2 + 7];
        let many: Vec<Vec<u8>> = (0..300_000).map(|i| format!("line {i}").into_bytes()).collect();
        let mut content = many.join(&b'\n');
        content.push(b'\n');
        content.extend_from_slice(&long);
        let read = lines(&content);
        assert_eq!(read.len(), many.len() + 1);
        assert_eq!(read[..many.len()], many[..]);
        assert_eq!(read[many.len()], long);
    }
}
