//! The dump's way into and out of the repository: a `sink` sends the plugin's
//! bytes to the thread writing the backup, a `source` hands out the bytes of a
//! stored dump. Both are bounded channels, so a plugin never runs ahead of the
//! repository by more than a few chunks.

use tokio::sync::mpsc;
use wasmtime::component::Resource;

use super::HostError;
use crate::plugins::state::JobState;
use crate::plugins::v0_1::ballast::plugin::streams;

/// The most bytes one `source.read` returns.
const MAX_READ: usize = 1 << 20;

pub struct Sink {
    pub(crate) tx: mpsc::Sender<Vec<u8>>,
}

pub struct Source {
    pub(crate) rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    pub(crate) pending: Vec<u8>,
    pub(crate) pos: usize,
}

impl streams::Host for JobState {}

impl streams::HostSink for JobState {
    async fn write(&mut self, sink: Resource<Sink>, bytes: Vec<u8>) -> Result<(), HostError> {
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
        let max = (max as usize).clamp(1, MAX_READ);
        let s = self.table.get_mut(&source)?;
        if s.pos == s.pending.len() {
            match s.rx.recv().await {
                None => return Ok(vec![]),
                Some(Err(e)) => return Err(HostError::Failed(format!("reading the backup: {e}"))),
                Some(Ok(chunk)) => {
                    s.pending = chunk;
                    s.pos = 0;
                }
            }
        }
        let n = max.min(s.pending.len() - s.pos);
        let out = s.pending[s.pos..s.pos + n].to_vec();
        s.pos += n;
        Ok(out)
    }

    async fn drop(&mut self, source: Resource<Source>) -> wasmtime::Result<()> {
        self.table.delete(source)?;
        Ok(())
    }
}
