//! What a granted program runs inside. Each program gets:
//!
//! - an empty working directory of its own (also `HOME` and `TMPDIR`), owned by the
//!   user it runs as; nothing of ballast's or of other programs is in it;
//! - the user of the grant's `run-as` (default `nobody` when ballast runs as root), with
//!   no supplementary groups and no way to gain privileges (`PR_SET_NO_NEW_PRIVS`);
//! - its own network namespace where the platform allows it ([`network`]): nothing to
//!   reach, or only its target;
//! - a Landlock domain where the kernel has Landlock: it may read and execute the
//!   system's programs and libraries and the few files of `/etc` that programs need,
//!   read and write its own directory, and nothing else (plus the grant's `read` and
//!   `write` paths); on kernels with Landlock network rules and no namespace, it may
//!   connect over TCP only to its target's port;
//! - a seccomp filter: no Unix sockets (neither Landlock nor a network namespace
//!   stops `connect` to a socket file such as a local database's), no leaving its
//!   process group (`setsid`, `setpgid`), no tracing or reading other processes'
//!   memory (`ptrace`, `process_vm_readv`/`writev`), no other system call ABI;
//! - death with ballast (`PR_SET_PDEATHSIG`), and its own process group, killed whole
//!   when it exits or the job ends.
//!
//! Everything is prepared before `fork`; between `fork` and `exec` the child makes only
//! system calls ([`Confinement::apply`]).
//!
//! [`network`]: super::network

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, ABI,
};

use crate::plugins::policy::{Program, RunAs};

/// What the system's programs need to read: libraries, locale and time zone data, the
/// dynamic linker's cache, names of users and hosts, CA certificates, and the
/// database clients' own configuration.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.alias",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/etc/crypto-policies",
    "/etc/mysql",
    "/etc/my.cnf",
    "/etc/my.cnf.d",
    "/etc/postgresql-common",
    "/etc/postgresql",
    "/etc/perl",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// Devices a program may write to besides its directory.
const SYSTEM_WRITE: &[&str] = &["/dev/null"];

/// A user to switch to.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// The user `name`, from the system's user database.
pub fn lookup(name: &str) -> io::Result<Ids> {
    let c = CString::new(name).map_err(|_| io::Error::other("a user name with a NUL"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r fills it from buf, which outlives it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(io::Error::other(format!("no user {name} on this system")));
    }
    Ok(Ids {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Everything the child applies to itself between `fork` and `exec`.
pub struct Confinement {
    /// The user to become, if any.
    ids: Option<Ids>,
    /// The network namespace to join.
    netns: Option<OwnedFd>,
    /// A Landlock ruleset to enforce.
    landlock: Option<OwnedFd>,
    /// A descriptor the program is to inherit (its credentials).
    pass: Option<libc::c_int>,
    /// ballast's pid: the child stops if ballast died before it could ask to die with it.
    parent: libc::pid_t,
    /// The seccomp program (see [`seccomp_filter`]).
    filter: Vec<libc::sock_filter>,
}

/// How a program was confined, for the job's debug log and the tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub user: Option<u32>,
    pub network: &'static str,
    pub landlock: &'static str,
}

/// The user `program` runs as, if ballast is to switch to one.
pub fn ids_for(program: &Program) -> Result<Option<Ids>, String> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match &program.run_as {
        RunAs::Inherit => Ok(None),
        RunAs::User(name) if !root => Err(format!(
            "the policy says to run {} as {name}, but ballast does not run as root and \
             cannot switch users; drop run-as (programs then run as ballast's user), or run \
             ballast as root",
            program.path.display()
        )),
        RunAs::User(name) => lookup(name)
            .map(Some)
            .map_err(|e| format!("run-as for {}: {e}", program.path.display())),
    }
}

impl Confinement {
    /// Prepares the confinement of `program`, to run in `dir` as `ids`. Without a
    /// network namespace, TCP is limited (where Landlock can) to `tcp_port`, the
    /// target's, or denied.
    pub fn prepare(
        program: &Program,
        dir: &Path,
        ids: Option<Ids>,
        netns: Option<OwnedFd>,
        tcp_port: Option<u16>,
        also_read: &[PathBuf],
        report: &mut Report,
    ) -> Result<Confinement, String> {
        report.user = ids.map(|i| i.uid);
        report.network = match (&netns, tcp_port) {
            (Some(_), _) => "its own namespace",
            (None, Some(_)) => "ballast's, TCP to the target's port only (Landlock)",
            (None, None) => "ballast's, no TCP (Landlock)",
        };
        let landlock = landlock_ruleset(program, dir, netns.is_none(), tcp_port, also_read)
            .map_err(|e| format!("preparing the file system rules: {e}"))?;
        report.landlock = if landlock.is_some() {
            "enforced"
        } else {
            "not available on this kernel"
        };
        Ok(Confinement {
            ids,
            netns,
            landlock,
            pass: None,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            filter: seccomp_filter(),
        })
    }

    /// Lets the program inherit `fd` (cleared of close-on-exec in the child only).
    pub fn pass(&mut self, fd: libc::c_int) {
        self.pass = Some(fd);
    }

    /// The user the program becomes, if any (its directory and files are given to it).
    pub fn ids(&self) -> Option<Ids> {
        self.ids
    }

    /// Runs in the child between `fork` and `exec`: system calls only, no allocation.
    pub fn apply(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: each call below is a plain system call on values prepared before
        // fork; none allocates or takes a lock.
        unsafe {
            if let Some(ns) = &self.netns {
                check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET))?;
            }
            if let Some(fd) = self.pass {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
            if let Some(ids) = self.ids {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(ids.gid))?;
                check(libc::setuid(ids.uid))?;
            }
            // After the user change, which clears it.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            if libc::getppid() != self.parent {
                return Err(io::Error::other("ballast ended before the program started"));
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if let Some(ruleset) = &self.landlock {
                check(
                    libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0)
                        as libc::c_int,
                )?;
            }
            // Last: the filter also refuses what the steps above needed.
            let prog = libc::sock_fprog {
                len: self.filter.len() as u16,
                filter: self.filter.as_ptr() as *mut libc::sock_filter,
            };
            check(libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ))?;
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x32 system calls (on x86_64) have this bit set in their number.
const X32_BIT: u32 = 0x4000_0000;

/// System calls a program may not make at all (EPERM).
const DENIED: &[libc::c_long] = &[
    libc::SYS_setsid,
    libc::SYS_setpgid,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
];

/// A classic BPF program for seccomp: `socket(AF_UNIX, ...)` fails with EACCES, the
/// calls in [`DENIED`] with EPERM, any call of another ABI (32-bit or x32) with
/// EPERM; everything else is allowed. (`socketpair` stays: a pair reaches nothing.)
fn seccomp_filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x00 | 0x00 | 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH: u32 = 4; // .arch
    const ARG0: u32 = 16; // .args[0], its low 32 bits (little endian)
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let errno = |e: i32| 0x0005_0000 | (e as u32 & 0xffff); // SECCOMP_RET_ERRNO
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| libc::sock_filter { code, jt, jf, k };
    let mut f = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, errno(libc::EPERM)),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_BIT, 0, 1),
        stmt(RET_K, errno(libc::EPERM)),
    ];
    for &nr in DENIED {
        f.push(jump(JEQ_K, nr as u32, 0, 1));
        f.push(stmt(RET_K, errno(libc::EPERM)));
    }
    f.extend([
        jump(JEQ_K, libc::SYS_socket as u32, 0, 3),
        stmt(LD_W_ABS, ARG0),
        jump(JEQ_K, libc::AF_UNIX as u32, 0, 1),
        stmt(RET_K, errno(libc::EACCES)),
        stmt(RET_K, ALLOW),
    ]);
    f
}

/// A Landlock ruleset for `program` in `dir`, or `None` where the kernel has no
/// Landlock. TCP is restricted to `target_port` when `restrict_tcp` (no namespace).
fn landlock_ruleset(
    program: &Program,
    dir: &Path,
    restrict_tcp: bool,
    target_port: Option<u16>,
    also_read: &[PathBuf],
) -> Result<Option<OwnedFd>, landlock::RulesetError> {
    let abi = ABI::V5;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut ruleset = Ruleset::default().handle_access(all)?;
    if restrict_tcp {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    let readable: Vec<PathBuf> = SYSTEM_READ
        .iter()
        .map(PathBuf::from)
        .chain(program.read.iter().cloned())
        .chain(also_read.iter().cloned())
        .collect();
    let writable: Vec<PathBuf> = SYSTEM_WRITE
        .iter()
        .map(PathBuf::from)
        .chain(std::iter::once(dir.to_path_buf()))
        .chain(program.write.iter().cloned())
        .collect();
    let mut created = ruleset
        .create()?
        .add_rules(path_beneath_rules(&readable, read))?
        .add_rules(path_beneath_rules(&writable, all))?;
    if restrict_tcp {
        if let Some(port) = target_port {
            created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
    }
    Ok(Option::<OwnedFd>::from(created))
}

/// A fresh directory for one program, owned by the user it runs as: its working
/// directory, `HOME` and `TMPDIR`.
pub fn program_dir(parent: &Path, n: usize, ids: Option<Ids>) -> io::Result<PathBuf> {
    let dir = parent.join(format!("program-{n}"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    if let Some(ids) = ids {
        std::os::unix::fs::chown(&dir, Some(ids.uid), Some(ids.gid))?;
    }
    Ok(dir)
}
