//! Moving bytes and rows between the host's resources.

use crate::bindings::ballast::plugin::exec::{self, Process};
use crate::bindings::ballast::plugin::sql::{Session, Value};
use crate::{failed, job, Error, Sink, Source};

/// How much one read asks the host for (the host may return less).
const READ_SIZE: u32 = 1 << 20;

/// Copies a program's standard output into `out` until it ends, reporting progress;
/// returns the bytes copied. The caller still waits for the program (see [`finish`]).
pub fn copy_out(process: &Process, out: &Sink) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        let chunk = process.read(READ_SIZE)?;
        if chunk.is_empty() {
            return Ok(total);
        }
        out.write(&chunk)?;
        total += chunk.len() as u64;
        job::progress(total, None);
    }
}

/// Copies `input` into a program's standard input and closes it; returns the bytes
/// copied. The caller still waits for the program (see [`finish`]).
pub fn copy_in(input: &Source, process: &Process) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        let chunk = input.read(READ_SIZE)?;
        if chunk.is_empty() {
            process.close();
            return Ok(total);
        }
        process.write(&chunk)?;
        total += chunk.len() as u64;
        job::progress(total, None);
    }
}

/// Waits for a program and turns a failed exit into an error that quotes the end of
/// its standard error.
pub fn finish(program: &str, process: Process) -> Result<(), Error> {
    let exit = process.wait()?;
    match exit.code {
        Some(0) => Ok(()),
        Some(code) => Err(failed(format!(
            "{program} exited with status {code}: {}",
            exit.stderr_tail.trim()
        ))),
        None => Err(failed(format!(
            "{program} was killed by a signal: {}",
            exit.stderr_tail.trim()
        ))),
    }
}

/// Runs a program to its end with no input and returns its standard output.
pub fn run(program: &str, args: &[&str], target: Option<&str>) -> Result<Vec<u8>, Error> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let process = exec::spawn(program, &args, target)?;
    process.close();
    let mut out = Vec::new();
    loop {
        let chunk = process.read(READ_SIZE)?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    finish(program, process)?;
    Ok(out)
}

/// Runs a query and collects its rows.
pub fn query(
    session: &Session,
    statement: &str,
    params: &[Value],
) -> Result<Vec<Vec<Value>>, Error> {
    let rows = session.query(statement, params)?;
    let mut all = Vec::new();
    loop {
        let batch = rows.next(1000)?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

/// A [`Source`] as a `std::io::Read`.
pub fn source_reader(source: &Source) -> impl std::io::Read + '_ {
    ChunkReader::new(move |max| source.read(max))
}

/// A program's standard output as a `std::io::Read`.
pub fn process_reader(process: &Process) -> impl std::io::Read + '_ {
    ChunkReader::new(move |max| process.read(max))
}

/// Reads a host resource that hands out chunks (an empty one at the end).
struct ChunkReader<F> {
    next: F,
    buf: Vec<u8>,
    pos: usize,
}

impl<F: FnMut(u32) -> Result<Vec<u8>, Error>> ChunkReader<F> {
    fn new(next: F) -> Self {
        ChunkReader {
            next,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl<F: FnMut(u32) -> Result<Vec<u8>, Error>> std::io::Read for ChunkReader<F> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf = (self.next)(READ_SIZE).map_err(|e| std::io::Error::other(e.to_string()))?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
