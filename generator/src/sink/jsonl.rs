//! JSONL files: `ad-impressions.jsonl` and `ad-clicks.jsonl`, one message per line, the exact bytes that
//! would be produced. No message contains a newline, so line n of a file is message n of that topic.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::Sink;
use crate::model::Topic;

pub struct JsonlSink {
    /// One buffered file per topic, indexed by [`Topic::index`].
    files: [(PathBuf, BufWriter<File>); 2],
}

impl JsonlSink {
    /// Creates `dir` if needed and replaces both files in it.
    pub fn create(dir: &Path) -> Result<JsonlSink> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |topic: Topic| -> Result<(PathBuf, BufWriter<File>)> {
            let path = dir.join(topic.jsonl_file_name());
            let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            Ok((path, BufWriter::with_capacity(1 << 20, file)))
        };
        Ok(JsonlSink { files: [open(Topic::Impressions)?, open(Topic::Clicks)?] })
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, topic: Topic, _key: &[u8], payload: &[u8]) -> Result<()> {
        let (path, file) = &mut self.files[topic.index()];
        file.write_all(payload)
            .and_then(|()| file.write_all(b"\n"))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn finish(&mut self) -> Result<()> {
        for (path, file) in &mut self.files {
            file.flush().with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
