//! The built-in pause, started by the shim itself rather than by the OCI
//! runtime.
//!
//! hulld marks the spec of its built-in pause with
//! [`hull_proto::headers::BUILTIN_PAUSE`]. When such a task is created and
//! started in one call, the shim runs `hull-shim pause-init` in the bundle:
//! a helper, single-threaded from its first instruction, that reads the same
//! spec and does for this one process what the runtime would. It joins the
//! spec's cgroup (made in every hierarchy), takes its oom_score_adj and
//! rlimits, joins the namespaces given by path (the pod's network) and
//! unshares the others (mount, IPC, UTS, PID), sets the hostname and the
//! sysctls there, then forks the pause. The pause, PID 1 of its PID
//! namespace, makes its mounts private, bind-mounts the spec's bind mounts
//! (its binary and libraries) into the spec's root, pivots into it, makes
//! it read-only, takes the spec's user and groups, drops every capability
//! (bounding, ambient, effective, permitted, inheritable), sets
//! no_new_privs and executes the spec's command. The helper prints the
//! pause's pid and exits; the pause is reparented to the shim (a
//! subreaper), whose reaper sees its exit like any container's.
//!
//! That is one exec of a small binary where the runtime costs a Go
//! runtime's start, its re-exec and its state files: a few milliseconds
//! instead of about thirty on the machines measured.
//!
//! The pause needs nothing else: no /proc, /dev or /sys, no devices, so
//! the spec's other mounts and its device rules are not made (the pause is
//! stricter than the runtime would make it, not looser). A spec asking for
//! what this launcher does not do (a user namespace, seccomp, resource
//! limits, a terminal) is run by the OCI runtime as any other: the
//! annotation is a hint, never a requirement.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use serde::Deserialize;

use crate::reaper::Monitor;
use crate::runc::{self, CallIo, RuncError};

/// The marker file in a bundle whose init the shim started itself.
pub const MARKER: &str = "native-pause";
/// The helper's subcommand.
pub const SUBCOMMAND: &str = "pause-init";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SpecDoc {
    process: ProcessDoc,
    root: RootDoc,
    hostname: String,
    mounts: Vec<MountDoc>,
    linux: LinuxDoc,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProcessDoc {
    terminal: bool,
    user: UserDoc,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    oom_score_adj: Option<i32>,
    rlimits: Vec<RlimitDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UserDoc {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RlimitDoc {
    #[serde(rename = "type")]
    kind: String,
    hard: u64,
    soft: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RootDoc {
    path: String,
    readonly: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MountDoc {
    destination: String,
    #[serde(rename = "type")]
    kind: String,
    source: String,
    options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct LinuxDoc {
    namespaces: Vec<NamespaceDoc>,
    sysctl: BTreeMap<String, String>,
    cgroups_path: String,
    resources: Option<ResourcesDoc>,
    seccomp: Option<serde_json::Value>,
    uid_mappings: Vec<serde_json::Value>,
    gid_mappings: Vec<serde_json::Value>,
    devices: Vec<serde_json::Value>,
}

/// The resources of a spec: only device rules (which the pause, having no
/// /dev, never meets) leave it to this launcher.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourcesDoc {
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NamespaceDoc {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

/// One bind mount of the pause's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the root.
    pub destination: PathBuf,
    /// Read-only.
    pub readonly: bool,
}

/// What the launcher does for one spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The root (absolute, or relative to the bundle).
    pub root: PathBuf,
    /// Whether the root is made read-only.
    pub readonly: bool,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Its working directory inside the root.
    pub cwd: String,
    /// uid, gid and supplementary groups.
    pub user: (u32, u32, Vec<u32>),
    /// The hostname, set in a new UTS namespace.
    pub hostname: Option<String>,
    /// Namespaces joined by path: (clone flag, path).
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Namespaces made new.
    pub new: CloneFlags,
    /// Bind mounts into the root.
    pub binds: Vec<Bind>,
    /// Sysctls, set inside the namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// The cgroup (absolute within each hierarchy); empty: the shim's own.
    pub cgroup: String,
    /// oom_score_adj, when set.
    pub oom_score_adj: Option<i32>,
    /// rlimits: (resource, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
}

fn namespace_flag(kind: &str) -> Option<CloneFlags> {
    Some(match kind {
        "mount" => CloneFlags::CLONE_NEWNS,
        "network" => CloneFlags::CLONE_NEWNET,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "uts" => CloneFlags::CLONE_NEWUTS,
        "pid" => CloneFlags::CLONE_NEWPID,
        "cgroup" => CloneFlags::CLONE_NEWCGROUP,
        // "user" and anything newer: the runtime's job.
        _ => return None,
    })
}

fn rlimit_resource(kind: &str) -> Option<i32> {
    // The resource numbers are glibc's enum; the cast is to the int that
    // setrlimit takes.
    #[allow(clippy::unnecessary_cast)]
    Some(match kind {
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE as i32,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC as i32,
        "RLIMIT_CORE" => libc::RLIMIT_CORE as i32,
        "RLIMIT_STACK" => libc::RLIMIT_STACK as i32,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK as i32,
        "RLIMIT_AS" => libc::RLIMIT_AS as i32,
        "RLIMIT_CPU" => libc::RLIMIT_CPU as i32,
        "RLIMIT_DATA" => libc::RLIMIT_DATA as i32,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE as i32,
        "RLIMIT_NICE" => libc::RLIMIT_NICE as i32,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO as i32,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING as i32,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE as i32,
        _ => return None,
    })
}

/// The launcher's plan for spec `text`, or None when the spec is not the
/// built-in pause's or asks for what only the runtime does.
pub fn plan(text: &[u8]) -> Option<Plan> {
    let doc: SpecDoc = serde_json::from_slice(text).ok()?;
    if doc
        .annotations
        .get(hull_proto::headers::BUILTIN_PAUSE)
        .map(String::as_str)
        != Some("true")
    {
        return None;
    }
    let linux = &doc.linux;
    let limited = linux
        .resources
        .as_ref()
        .is_some_and(|r| r.other.keys().any(|k| k != "devices"));
    if doc.process.terminal
        || doc.process.args.is_empty()
        || doc.root.path.is_empty()
        || linux.seccomp.is_some()
        || !linux.uid_mappings.is_empty()
        || !linux.gid_mappings.is_empty()
        || !linux.devices.is_empty()
        || limited
    {
        return None;
    }
    let mut join = Vec::new();
    let mut new = CloneFlags::empty();
    for ns in &linux.namespaces {
        let flag = namespace_flag(&ns.kind)?;
        if ns.path.is_empty() {
            new |= flag;
        } else {
            join.push((flag, PathBuf::from(&ns.path)));
        }
    }
    // A process outside a mount namespace of its own would pivot the
    // host's root.
    if !new.contains(CloneFlags::CLONE_NEWNS) {
        return None;
    }
    let binds = doc
        .mounts
        .iter()
        .filter(|m| m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind"))
        .map(|m| Bind {
            source: PathBuf::from(&m.source),
            destination: PathBuf::from(&m.destination),
            readonly: m.options.iter().any(|o| o == "ro"),
        })
        .collect();
    let mut rlimits = Vec::new();
    for r in &doc.process.rlimits {
        rlimits.push((rlimit_resource(&r.kind)?, r.soft, r.hard));
    }
    let hostname = (!doc.hostname.is_empty() && new.contains(CloneFlags::CLONE_NEWUTS))
        .then(|| doc.hostname.clone());
    Some(Plan {
        root: PathBuf::from(&doc.root.path),
        readonly: doc.root.readonly,
        args: doc.process.args.clone(),
        env: doc.process.env.clone(),
        cwd: if doc.process.cwd.is_empty() {
            "/".to_owned()
        } else {
            doc.process.cwd.clone()
        },
        user: (
            doc.process.user.uid,
            doc.process.user.gid,
            doc.process.user.additional_gids.clone(),
        ),
        hostname,
        join,
        new,
        binds,
        sysctls: linux.sysctl.clone(),
        cgroup: linux.cgroups_path.clone(),
        oom_score_adj: doc.process.oom_score_adj,
        rlimits,
    })
}

/// The plan for the spec of `bundle`, read from its config.json.
pub fn plan_for(bundle: &Path) -> Option<Plan> {
    plan(&std::fs::read(bundle.join("config.json")).ok()?)
}

/// The directories of cgroup `path` in every hierarchy the shim drives
/// (the v1 ones on a v1 or hybrid host, else the unified one).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    if path.is_empty() {
        return Vec::new();
    }
    let rel = path.trim_start_matches('/');
    crate::cgroup::roots()
        .into_iter()
        .map(|r| r.join(rel))
        .collect()
}

/// A pause the shim started, for the task operations the runtime would
/// otherwise do.
#[derive(Debug)]
pub struct Pause {
    /// Its pid.
    pub pid: u32,
    /// Its cgroup's directories.
    pub cgroups: Vec<PathBuf>,
}

/// Why an operation on a pause failed.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// A signal could not be sent.
    #[error("signal {signal} to pid {pid}")]
    Signal {
        /// The signal.
        signal: u32,
        /// The pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup file could not be written.
    #[error("write {}", path.display())]
    Cgroup {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup has no freezer.
    #[error("the cgroup of pid {0} has no freezer")]
    NoFreezer(u32),
}

impl hull_proto::errdefs::Classify for PauseError {
    fn kind(&self) -> hull_proto::errdefs::Kind {
        match self {
            PauseError::Signal { source, .. } if source.raw_os_error() == Some(libc::ESRCH) => {
                hull_proto::errdefs::Kind::NotFound
            }
            PauseError::NoFreezer(_) => hull_proto::errdefs::Kind::FailedPrecondition,
            _ => hull_proto::errdefs::Kind::Unknown,
        }
    }
}

fn send(pid: u32, signal: u32) -> Result<(), PauseError> {
    // SAFETY: kill(2) has no memory effects. nix's Signal lacks the
    // real-time signals, which clients may send.
    if unsafe { libc::kill(pid as i32, signal as i32) } == 0 {
        Ok(())
    } else {
        Err(PauseError::Signal {
            signal,
            pid,
            source: std::io::Error::last_os_error(),
        })
    }
}

impl Pause {
    /// Starts the pause of `bundle` through the helper, which leaves its
    /// pid in the bundle's `init.pid` and the [`MARKER`] beside it, as the
    /// runtime leaves its state.
    ///
    /// # Errors
    /// When the helper cannot be started or reports a failure.
    pub async fn start(monitor: &Monitor, bundle: &Path, cgroup: &str) -> Result<Pause, RuncError> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("hull-shim").arg(SUBCOMMAND).current_dir(bundle);
        let done = runc::call(monitor, cmd, "hull-shim", SUBCOMMAND, CallIo::Capture).await?;
        let text = String::from_utf8_lossy(&done.stdout);
        let pid = text.trim().parse::<u32>().ok().filter(|p| *p > 0);
        let Some(pid) = pid.filter(|_| done.status == 0) else {
            return Err(RuncError::Failed {
                binary: "hull-shim".to_owned(),
                command: SUBCOMMAND,
                status: done.status,
                message: String::from_utf8_lossy(&done.stderr).trim().to_owned(),
            });
        };
        Ok(Pause {
            pid,
            cgroups: cgroup_dirs(cgroup),
        })
    }

    /// The pids in its cgroup (the pause's alone when the cgroup is gone).
    pub fn pids(&self) -> Vec<u32> {
        let listed = self
            .cgroups
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok());
        match listed {
            Some(text) => text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            None => vec![self.pid],
        }
    }

    /// Sends `signal` to the pause (unless it is no longer `alive`: its
    /// pid may be another's then), and with `all` to every other process
    /// of its cgroup.
    ///
    /// # Errors
    /// When the pause cannot be signalled.
    pub fn kill(&self, signal: u32, all: bool, alive: bool) -> Result<(), PauseError> {
        if all {
            for pid in self.pids().into_iter().filter(|p| *p != self.pid) {
                // One that exited meanwhile is no error.
                let _ = send(pid, signal);
            }
        }
        if alive {
            send(self.pid, signal)
        } else {
            Ok(())
        }
    }

    /// Freezes (or thaws) its cgroup, as the runtime's pause and resume.
    ///
    /// # Errors
    /// When the cgroup has no freezer or it cannot be written.
    pub fn freeze(&self, frozen: bool) -> Result<(), PauseError> {
        for dir in &self.cgroups {
            let (file, value) = if dir.join("freezer.state").exists() {
                ("freezer.state", if frozen { "FROZEN" } else { "THAWED" })
            } else if dir.join("cgroup.freeze").exists() {
                ("cgroup.freeze", if frozen { "1" } else { "0" })
            } else {
                continue;
            };
            let path = dir.join(file);
            std::fs::write(&path, value).map_err(|source| PauseError::Cgroup { path, source })?;
            return Ok(());
        }
        Err(PauseError::NoFreezer(self.pid))
    }

    /// Removes its cgroup once the pause is gone (the runtime's delete).
    pub fn delete(&self) {
        remove_cgroups(&self.cgroups);
    }

    /// Statistics of its cgroup.
    pub fn stats(&self) -> crate::stats::Stats {
        crate::stats::from_cgroup(&self.cgroups)
    }
}

/// Removes cgroup directories, waiting a moment for processes that are
/// still leaving them.
fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        for _ in 0..50 {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => break,
            }
        }
    }
}

/// After the shim died: ends the pause it started in the current bundle
/// (if it is still that pause) and removes its cgroup. Does nothing in a
/// bundle whose init the runtime started; returns whether it was a pause's.
pub fn remove_orphan(bundle: &Path) -> bool {
    if !bundle.join(MARKER).exists() {
        return false;
    }
    let plan = plan_for(bundle);
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|p| *p > 1);
    if let (Some(pid), Some(plan)) = (pid, &plan) {
        // The pid is the pause's while it still runs the pause's command
        // in the pause's cgroup.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if plan.args.first().map(String::as_bytes) == Some(first)
            && !plan.cgroup.is_empty()
            && cgroup.contains(&plan.cgroup)
        {
            let _ = send(pid, libc::SIGKILL as u32);
        }
    }
    if let Some(plan) = plan {
        remove_cgroups(&cgroup_dirs(&plan.cgroup));
    }
    true
}

// ---- the helper: runs in its own fresh process, before any thread ----

/// `hull-shim pause-init`: starts the pause of the bundle in the current
/// directory; leaves its pid in `init.pid` and the [`MARKER`], and prints
/// the pid. Returns the exit code.
pub fn init() -> i32 {
    match launch() {
        Ok(pid) => {
            let recorded = std::fs::write("init.pid", pid.to_string())
                .and_then(|()| std::fs::write(MARKER, ""));
            if let Err(e) = recorded {
                eprintln!("record the pause's pid in the bundle: {e}");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return 1;
            }
            let mut out = std::io::stdout();
            if write!(out, "{pid}").and_then(|()| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn fail(what: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn fail_io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn launch() -> Result<i32, String> {
    let bundle = std::env::current_dir().map_err(fail_io("current directory"))?;
    let plan = plan_for(&bundle).ok_or("the bundle's spec is not the built-in pause's")?;
    let root = bundle.join(&plan.root);
    // The cgroup first: the pause inherits it, and nothing after runs
    // outside it.
    join_cgroup(&plan.cgroup)?;
    if let Some(score) = plan.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", score.to_string())
            .map_err(fail_io("oom_score_adj"))?;
    }
    for (resource, soft, hard) in &plan.rlimits {
        let limit = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        #[allow(clippy::useless_conversion)]
        if unsafe { libc::setrlimit((*resource).try_into().unwrap_or_default(), &limit) } != 0 {
            return Err(format!(
                "rlimit {resource}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // Open every namespace before joining any: a path may not resolve
    // from inside another namespace.
    let mut joins = Vec::new();
    for (flag, path) in &plan.join {
        let fd: OwnedFd = std::fs::File::open(path)
            .map_err(fail_io(format!("open namespace {}", path.display())))?
            .into();
        joins.push((*flag, path, fd));
    }
    for (flag, path, fd) in &joins {
        setns(fd.as_fd(), *flag).map_err(fail(format!("join namespace {}", path.display())))?;
    }
    unshare(plan.new).map_err(fail("unshare namespaces"))?;
    if let Some(name) = &plan.hostname {
        nix::unistd::sethostname(name).map_err(fail("set hostname"))?;
    }
    for (key, value) in &plan.sysctls {
        set_sysctl(key, value)?;
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(fail_io("open /dev/null"))?;
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("pipe"))?;
    // SAFETY: this process has one thread (the helper runs before any
    // runtime or thread is started), so the child may do anything.
    match unsafe { fork() }.map_err(fail("fork"))? {
        ForkResult::Child => {
            drop(report_read);
            let err = become_pause(&plan, &root, &null);
            let mut w = std::fs::File::from(report_write);
            let _ = w.write_all(err.as_bytes());
            // SAFETY: ends this child at once, without unwinding into the
            // parent's copy of the stack.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            drop(report_write);
            let mut message = String::new();
            // EOF without a word: the pause's exec closed the pipe.
            let _ = std::fs::File::from(report_read).read_to_string(&mut message);
            if message.is_empty() {
                Ok(child.as_raw())
            } else {
                let _ = nix::sys::wait::waitpid(child, None);
                Err(message)
            }
        }
    }
}

/// Makes `path` (and its missing parents) in every hierarchy and moves
/// this (single-threaded) process there. A new cpuset cgroup of v1 starts with no CPUs and
/// no memory nodes; it gets its parent's, as the runtime does.
fn join_cgroup(path: &str) -> Result<(), String> {
    join_cgroup_in(&crate::cgroup::roots(), path, std::process::id())
}

/// [`join_cgroup`] for pid `pid` in the hierarchies mounted at `roots`.
fn join_cgroup_in(roots: &[PathBuf], path: &str, pid: u32) -> Result<(), String> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    let me = pid.to_string();
    for root in roots {
        let mut dir = root.clone();
        for part in Path::new(rel).components() {
            let parent = dir.clone();
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("create cgroup {}: {e}", dir.display())),
            }
            // Every level, made here or not: one another pod's start has
            // just made may not have its CPUs yet (copying the same values
            // twice is harmless).
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                if dir.join(file).exists() && own.trim().is_empty() {
                    let inherited = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    std::fs::write(dir.join(file), inherited.trim())
                        .map_err(fail_io(format!("set {}", dir.join(file).display())))?;
                }
            }
        }
        // On v1, the helper's one thread moves itself through `tasks`
        // ("0": the writer), which spares the global lock a process
        // migration takes (several ms, once per burst of migrations); its
        // fork inherits the cgroup all the same. v2 moves processes only.
        let tasks = dir.join("tasks");
        let (file, who) = if tasks.exists() {
            (tasks, "0")
        } else {
            (dir.join("cgroup.procs"), me.as_str())
        };
        std::fs::write(&file, who).map_err(fail_io(format!("join {}", file.display())))?;
    }
    Ok(())
}

/// Writes sysctl `key` under /proc/sys, in this process's namespaces.
fn set_sysctl(key: &str, value: &str) -> Result<(), String> {
    if key.split(['.', '/']).any(|p| p.is_empty() || p == "..") {
        return Err(format!("sysctl {key:?}: not a sysctl name"));
    }
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(fail_io(format!("sysctl {key}")))
}

/// The pause's side of the fork: the root, the user, the privileges, then
/// the command. Returns only on failure, with what failed.
fn become_pause(plan: &Plan, root: &Path, null: &std::fs::File) -> String {
    match prepare(plan, root, null) {
        Ok(()) => {}
        Err(e) => return e,
    }
    let cstrings = |v: &[String]| -> Result<Vec<CString>, String> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|_| format!("NUL in {s:?}")))
            .collect()
    };
    let (args, env) = match (cstrings(&plan.args), cstrings(&plan.env)) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match nix::unistd::execve(&args[0], &args, &env) {
        Ok(never) => match never {},
        Err(e) => format!("exec {}: {e}", plan.args[0]),
    }
}

fn prepare(plan: &Plan, root: &Path, null: &std::fs::File) -> Result<(), String> {
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which nothing in this
        // process holds as an owned value. nix's dup2 takes an OwnedFd
        // target, which 0 to 2 are not here.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "stdio to /dev/null: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    close_on_exec_from(3);
    // Nothing mounted from here on reaches the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("make mounts private"))?;
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail(format!("bind root {}", root.display())))?;
    for b in &plan.binds {
        bind_into(root, b)?;
    }
    nix::unistd::chdir(root).map_err(fail("enter root"))?;
    nix::unistd::pivot_root(".", ".").map_err(fail("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("detach the old root"))?;
    nix::unistd::chdir("/").map_err(fail("chdir /"))?;
    if plan.readonly {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(fail("make root read-only"))?;
    }
    nix::unistd::chdir(plan.cwd.as_str()).map_err(fail(format!("chdir {}", plan.cwd)))?;
    drop_bounding_set()?;
    let (uid, gid, groups) = &plan.user;
    let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(fail("setgroups"))?;
    nix::unistd::setresgid(
        Gid::from_raw(*gid),
        Gid::from_raw(*gid),
        Gid::from_raw(*gid),
    )
    .map_err(fail("setgid"))?;
    nix::unistd::setresuid(
        Uid::from_raw(*uid),
        Uid::from_raw(*uid),
        Uid::from_raw(*uid),
    )
    .map_err(fail("setuid"))?;
    clear_capabilities()?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec, so that the pause
/// holds none of what the shim or the helper had open.
fn close_on_exec_from(first: u32) {
    /// `CLOSE_RANGE_CLOEXEC` (Linux 5.11).
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
    // SAFETY: close_range only changes descriptor flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return;
    }
    // An older kernel: each descriptor up to the limit, one by one.
    // SAFETY: sysconf only reads a constant.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 65536) as i32;
    for fd in first as i32..max {
        // SAFETY: fcntl on a descriptor number that may not be open: EBADF
        // then, and nothing changes.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Bind-mounts `b` at its destination inside `root`, making the mount
/// point (an empty file for a file, a directory for a directory).
fn bind_into(root: &Path, b: &Bind) -> Result<(), String> {
    let rel = b.destination.strip_prefix("/").unwrap_or(&b.destination);
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("mount destination {}", b.destination.display()));
    }
    let target = root.join(rel);
    let is_dir = b.source.is_dir();
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(fail_io(format!("create {}", parent.display())))?;
    }
    let made = if is_dir {
        std::fs::create_dir_all(&target)
    } else if target.exists() {
        Ok(())
    } else {
        std::fs::File::create(&target).map(drop)
    };
    made.map_err(fail_io(format!("create {}", target.display())))?;
    mount(
        Some(&b.source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail(format!("bind {}", b.source.display())))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if b.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
        .map_err(fail(format!("remount {}", target.display())))
}

/// Drops every capability from the bounding set (needs CAP_SETPCAP, so
/// before the user changes).
fn drop_bounding_set() -> Result<(), String> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: past the last capability this kernel knows.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!("drop capability {cap}: {e}"));
        }
    }
    Ok(())
}

/// The kernel's capability header (`struct __user_cap_header_struct`).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// One half of the capability sets (`struct __user_cap_data_struct`).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the ambient, effective, permitted and inheritable sets.
fn clear_capabilities() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only. EINVAL on a kernel
    // without ambient capabilities, which then has none to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads the header and two data structs, laid out as
    // the kernel's for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r != 0 {
        return Err(format!(
            "clear capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> Vec<u8> {
        let mut v = serde_json::json!({
            "process": {"args": ["/pause"], "env": ["PATH=/bin"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                        "oomScoreAdj": -998},
            "root": {"path": "/pods/p/rootfs", "readonly": true},
            "hostname": "pod",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/pause", "type": "bind", "source": "/usr/bin/hull-shim",
                 "options": ["rbind", "ro", "nosuid", "nodev"]},
                {"destination": "/dev/shm", "type": "bind", "source": "/pods/p/shm",
                 "options": ["rbind", "rw"]}
            ],
            "linux": {
                "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"},
                               {"type": "uts"}, {"type": "network", "path": "/run/netns/p"}],
                "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"},
                "cgroupsPath": "/k8s.io/p",
                "resources": {"devices": [{"allow": false, "access": "rwm"}]}
            },
            "annotations": {"io.hull.builtin-pause": "true"}
        });
        if let (Some(o), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in extra {
                o.insert(k.clone(), val.clone());
            }
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn plans_the_pods_pause() {
        let p = plan(&spec(serde_json::json!({}))).expect("the built-in pause's spec");
        assert_eq!(p.root, PathBuf::from("/pods/p/rootfs"));
        assert!(p.readonly);
        assert_eq!(p.args, ["/pause"]);
        assert_eq!(p.hostname.as_deref(), Some("pod"));
        assert_eq!(
            p.new,
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
        );
        assert_eq!(
            p.join,
            [(CloneFlags::CLONE_NEWNET, PathBuf::from("/run/netns/p"))]
        );
        assert_eq!(p.binds.len(), 2, "the bind mounts only: {:?}", p.binds);
        assert!(p.binds[0].readonly && !p.binds[1].readonly);
        assert_eq!(p.cgroup, "/k8s.io/p");
        assert_eq!(p.oom_score_adj, Some(-998));
        assert_eq!(p.rlimits, [(libc::RLIMIT_NOFILE as i32, 1024, 1024)]);
        assert_eq!(p.sysctls.len(), 1);
    }

    #[test]
    fn leaves_to_the_runtime_what_it_does_not_do() {
        let runtime = |extra| plan(&spec(extra)).is_none();
        assert!(runtime(serde_json::json!({"annotations": {}})), "unmarked");
        assert!(runtime(
            serde_json::json!({"annotations": {"io.hull.builtin-pause": "false"}})
        ));
        assert!(runtime(serde_json::json!({"linux": {
            "namespaces": [{"type": "mount"}, {"type": "user"}]}})));
        assert!(
            runtime(serde_json::json!({"linux": {
            "namespaces": [{"type": "pid"}]}})),
            "no mount namespace"
        );
        assert!(runtime(serde_json::json!({"linux": {
            "namespaces": [{"type": "mount"}], "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}})));
        assert!(runtime(serde_json::json!({"linux": {
            "namespaces": [{"type": "mount"}], "resources": {"memory": {"limit": 1}}}})));
        assert!(runtime(
            serde_json::json!({"process": {"args": ["/pause"], "terminal": true}})
        ));
        assert!(runtime(serde_json::json!({"process": {"args": ["/pause"],
            "rlimits": [{"type": "RLIMIT_UNKNOWN", "hard": 1, "soft": 1}]}})));
        assert!(plan(b"not json").is_none());
        // A spec with only a mount namespace, not marked otherwise: fine.
        assert!(!runtime(
            serde_json::json!({"linux": {"namespaces": [{"type": "mount"}]}})
        ));
    }

    #[test]
    fn a_cpuset_level_another_start_just_made_gets_its_parents_cpus() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cpuset");
        // The parent exists (another pod's start made it) but has no CPUs
        // yet, as the kernel makes it; so has the leaf.
        std::fs::create_dir_all(root.join("pods/p1")).unwrap();
        std::fs::write(root.join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(root.join("cpuset.mems"), "0\n").unwrap();
        for d in ["pods", "pods/p1"] {
            std::fs::write(root.join(d).join("cpuset.cpus"), "").unwrap();
            std::fs::write(root.join(d).join("cpuset.mems"), "").unwrap();
        }
        join_cgroup_in(std::slice::from_ref(&root), "/pods/p1", 4242).unwrap();
        for d in ["pods", "pods/p1"] {
            let read = |f: &str| std::fs::read_to_string(root.join(d).join(f)).unwrap();
            assert_eq!(
                (read("cpuset.cpus"), read("cpuset.mems")),
                ("0-1".into(), "0".into())
            );
        }
        assert_eq!(
            std::fs::read_to_string(root.join("pods/p1/cgroup.procs")).unwrap(),
            "4242"
        );
        // A v1 hierarchy: the thread moves itself.
        std::fs::write(root.join("pods/p1/tasks"), "").unwrap();
        join_cgroup_in(std::slice::from_ref(&root), "/pods/p1", 4242).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("pods/p1/tasks")).unwrap(),
            "0"
        );
        // A level with CPUs of its own keeps them.
        std::fs::write(root.join("pods/cpuset.cpus"), "1").unwrap();
        std::fs::create_dir_all(root.join("pods/p2")).unwrap();
        std::fs::write(root.join("pods/p2/cpuset.cpus"), "").unwrap();
        join_cgroup_in(std::slice::from_ref(&root), "/pods/p2", 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("pods/cpuset.cpus")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("pods/p2/cpuset.cpus")).unwrap(),
            "1"
        );
    }

    #[test]
    fn refuses_sysctl_names_that_leave_proc_sys() {
        assert!(set_sysctl("../../etc/x", "1").is_err());
        assert!(set_sysctl("net..x", "1").is_err());
    }
}
