//! A stand-in for the kubelet's static-pod handling, for in-place restore tests: it
//! watches one manifest file, runs the command of its first container while the
//! file is there (the program and its arguments, on this machine), and kills it
//! when the file goes. That is the only kubelet behaviour `ballast etcd restore
//! --in-place` relies on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct StaticPodRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn command_of(manifest: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let pod: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    let c = &pod["spec"]["containers"][0];
    let words = |f: &str| -> Vec<String> {
        c[f].as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let cmd = [words("command"), words("args")].concat();
    (!cmd.is_empty()).then_some(cmd)
}

impl StaticPodRunner {
    /// Starts following `manifest`; the pod's output goes to `log`.
    pub fn start(manifest: PathBuf, log: PathBuf) -> StaticPodRunner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut running: Option<Child> = None;
            while !flag.load(Ordering::SeqCst) {
                let present = manifest.exists();
                if let Some(c) = running.as_mut() {
                    if !present || c.try_wait().ok().flatten().is_some() {
                        let _ = c.kill();
                        let _ = c.wait();
                        running = None;
                    }
                } else if let Some(cmd) = present.then(|| command_of(&manifest)).flatten() {
                    let out = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap();
                    running = Command::new(&cmd[0])
                        .args(&cmd[1..])
                        .stdout(out.try_clone().unwrap())
                        .stderr(out)
                        .stdin(Stdio::null())
                        .spawn()
                        .ok();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(mut c) = running {
                let _ = c.kill();
                let _ = c.wait();
            }
        });
        StaticPodRunner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StaticPodRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
