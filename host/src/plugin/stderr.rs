//! What a plugin writes to stderr when the operator did not grant it (`--plugin-grant stderr`):
//! nothing reaches the host's stderr, but the last [`KEPT`] bytes are kept, so that a trap's
//! error can say what the guest said before it (a Rust plugin's panic message, for one, is only
//! ever written there). Writes never fail, whatever a plugin writes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of a plugin's stderr kept: enough for a panic message and its location.
pub const KEPT: usize = 2048;

/// The end of what a plugin wrote to stderr (a cheap handle: clones share it).
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(KEPT)..];
        let over = (kept.len() + bytes.len()).saturating_sub(KEPT);
        kept.drain(..over);
        kept.extend(bytes);
    }

    /// What was written since the last call (then forgotten), on one line (for an error
    /// message); `None` if nothing.
    pub fn take(&self) -> Option<String> {
        let bytes: Vec<u8> = self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        (!lines.is_empty()).then(|| lines.join(" "))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(KEPT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_forgets_what_was_taken() {
        let tail = StderrTail::default();
        assert_eq!(tail.take(), None);
        tail.push(&vec![b'x'; KEPT * 2]);
        tail.push(b"\npanicked at src/lib.rs:3:5:\nboom\n");
        let text = tail.take().unwrap();
        assert!(text.ends_with("panicked at src/lib.rs:3:5: boom") && text.len() <= KEPT, "{text}");
        assert_eq!(tail.take(), None);
    }
}
