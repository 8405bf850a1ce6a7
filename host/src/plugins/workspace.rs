//! A job's directories, under one private temporary directory removed at the end:
//!
//! - `guest/`, the plugin's `/scratch`: a tmpfs of `limits.scratch` bytes (and a few
//!   thousand files) where ballast may mount one (it runs as root, or with
//!   CAP_SYS_ADMIN). Elsewhere the quota cannot be enforced, so the plugin gets no
//!   `/scratch` at all, rather than a directory that can fill the disk.
//! - `host/`, the host's own: one directory per program a plugin runs. Never visible
//!   to the plugin. It can be passed through (mode 0711) but not listed, so that a
//!   program running as another user reaches its own directory and nothing else.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct Workspace {
    /// Unmounted before the directory goes (field order).
    scratch: Option<Mounted>,
    dir: tempfile::TempDir,
    /// Why there is no `/scratch`, when there is none.
    pub no_scratch: Option<String>,
}

/// A tmpfs mounted for the job.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: unmounting a path we mounted.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// Files `/scratch` may hold.
const SCRATCH_FILES: u64 = 4096;

impl Workspace {
    pub fn new(scratch_bytes: u64) -> std::io::Result<Workspace> {
        let dir = tempfile::Builder::new()
            .prefix("ballast-plugin-")
            .tempdir()?;
        let host = dir.path().join("host");
        let guest = dir.path().join("guest");
        std::fs::create_dir(&host)?;
        std::fs::create_dir(&guest)?;
        for (p, mode) in [
            (dir.path(), 0o711),
            (host.as_path(), 0o711),
            (guest.as_path(), 0o700),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
        }
        let (scratch, no_scratch) = match mount_tmpfs(&guest, scratch_bytes) {
            Ok(()) => (Some(Mounted(guest)), None),
            Err(e) => (
                None,
                Some(format!(
                    "no /scratch: its quota needs a tmpfs, which ballast cannot mount here ({e})"
                )),
            ),
        };
        Ok(Workspace {
            scratch,
            dir,
            no_scratch,
        })
    }

    /// The plugin's `/scratch`, if it has one.
    pub fn guest(&self) -> Option<PathBuf> {
        self.scratch.as_ref().map(|m| m.0.clone())
    }

    /// The host's directory for the job's programs.
    pub fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }
}

fn mount_tmpfs(at: &Path, bytes: u64) -> std::io::Result<()> {
    let target = CString::new(at.as_os_str().as_bytes())?;
    let options = CString::new(format!(
        "size={},nr_inodes={SCRATCH_FILES},mode=0700",
        bytes.max(4096)
    ))?;
    // SAFETY: mounting a fresh tmpfs on a directory of our own.
    let rc = unsafe {
        libc::mount(
            c"ballast-scratch".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
