//! The dump's way into and out of the repository: a `sink` sends the plugin's
//! bytes to the thread writing the backup, a `source` hands out the bytes of a
//! stored dump. Both are bounded channels, so a plugin never runs ahead of the
//! repository by more than a few chunks.

use tokio::sync::mpsc;
use wasmtime::component::Resource;

use super::HostError;
use crate::plugins::budget::Held;
use crate::plugins::state::JobState;
use crate::plugins::v0_1::ballast::plugin::streams;

/// The most bytes one `source.read` returns, and one `sink.write` takes.
const MAX_READ: usize = 1 << 20;
const MAX_WRITE: usize = 4 << 20;

pub struct Sink {
    pub(crate) tx: mpsc::Sender<Vec<u8>>,
}

pub struct Source {
    pub(crate) chunks: Chunks,
}

/// A chunk on its way to the plugin, and the part of the job's buffer budget it
/// holds until the plugin has read it (for a program's output).
pub type Piece = (Vec<u8>, Option<Held>);

/// Chunks arriving on a channel, handed out `max` bytes at a time (a backup's
/// stream, a program's output).
pub struct Chunks {
    rx: mpsc::Receiver<Result<Piece, String>>,
    pending: Vec<u8>,
    held: Option<Held>,
    pos: usize,
}

impl Chunks {
    pub fn new(rx: mpsc::Receiver<Result<Piece, String>>) -> Chunks {
        Chunks {
            rx,
            pending: vec![],
            held: None,
            pos: 0,
        }
    }

    /// Up to `max` bytes (at most 1 MiB); empty at the end.
    pub async fn read(&mut self, max: u32) -> Result<Vec<u8>, String> {
        let max = (max as usize).clamp(1, MAX_READ);
        if self.pos == self.pending.len() {
            self.held = None;
            match self.rx.recv().await {
                None => return Ok(vec![]),
                Some(chunk) => {
                    (self.pending, self.held) = chunk?;
                    self.pos = 0;
                }
            }
        }
        let n = max.min(self.pending.len() - self.pos);
        let out = self.pending[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }
}

impl streams::Host for JobState {}

impl streams::HostSink for JobState {
    async fn write(&mut self, sink: Resource<Sink>, bytes: Vec<u8>) -> Result<(), HostError> {
        // Bounds what waits in the channel: 8 chunks of at most 4 MiB.
        if bytes.len() > MAX_WRITE {
            return Err(HostError::Invalid(format!(
                "a write of {} bytes; write at most 4 MiB at a time",
                bytes.len()
            )));
        }
        let limit = self.ctx.grants.limits.output;
        if self.output + bytes.len() as u64 > limit {
            return Err(HostError::Failed(format!(
                "the output limit of {} bytes is reached (limits.output in the policy)",
                limit
            )));
        }
        self.output += bytes.len() as u64;
        let tx = self.table.get(&sink)?.tx.clone();
        tx.send(bytes)
            .await
            .map_err(|_| HostError::Failed("the repository stopped taking data".into()))
    }

    async fn drop(&mut self, sink: Resource<Sink>) -> wasmtime::Result<()> {
        self.table.delete(sink)?;
        Ok(())
    }
}

impl streams::HostSource for JobState {
    async fn read(&mut self, source: Resource<Source>, max: u32) -> Result<Vec<u8>, HostError> {
        let s = self.table.get_mut(&source)?;
        s.chunks
            .read(max)
            .await
            .map_err(|e| HostError::Failed(format!("reading the backup: {e}")))
    }

    async fn drop(&mut self, source: Resource<Source>) -> wasmtime::Result<()> {
        self.table.delete(source)?;
        Ok(())
    }
}
