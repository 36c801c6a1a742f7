//! Command lines of the OCI runtime (runc, or crun with the same CLI).
//!
//! Every call subscribes to the reaper before it spawns, waits for its own
//! pid there, has a timeout, and keeps the runtime's error text (from its
//! JSON log or stderr) in the error.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use hull_proto::errdefs::{Classify, Kind};

use crate::reaper::{self, Monitor};

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The binary does not exist (worded as containerd's Go runtime
    /// reports it, which clients and people search for).
    #[error("{}", not_found_message(.binary))]
    BinaryNotFound {
        /// The runtime binary.
        binary: String,
    },
    /// The binary could not be started.
    #[error("start {binary}")]
    Spawn {
        /// The runtime binary.
        binary: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime exited non-zero.
    #[error("{binary} {command} exited with status {status}: {message}")]
    Failed {
        /// The runtime binary.
        binary: String,
        /// The subcommand.
        command: &'static str,
        /// Its exit status.
        status: u32,
        /// The runtime's own error text.
        message: String,
    },
    /// The runtime did not finish in time and was killed.
    #[error("{binary} {command} timed out after {secs} s")]
    Timeout {
        /// The runtime binary.
        binary: String,
        /// The subcommand.
        command: &'static str,
        /// The limit.
        secs: u64,
    },
    /// Its output could not be parsed.
    #[error("parse output of {command}")]
    Output {
        /// The subcommand.
        command: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The reaper stopped or dropped the exit.
    #[error("lost the exit status of {command}")]
    Lost {
        /// The subcommand.
        command: &'static str,
    },
}

impl Classify for RuncError {
    fn kind(&self) -> Kind {
        match self {
            RuncError::Failed { message, .. } if message.contains("does not exist") => {
                Kind::NotFound
            }
            RuncError::Timeout { .. } => Kind::DeadlineExceeded,
            _ => Kind::Unknown,
        }
    }
}

/// Go's wording: a bare name is looked up on PATH, a path is executed.
fn not_found_message(binary: &str) -> String {
    if binary.contains('/') {
        format!("fork/exec {binary}: no such file or directory")
    } else {
        format!("exec: {binary:?}: executable file not found in $PATH")
    }
}

/// Result of a runtime call.
pub type Result<T, E = RuncError> = std::result::Result<T, E>;

/// The stdio a runtime call gets.
pub enum CallIo {
    /// stdin null, stdout and stderr captured.
    Capture,
    /// Given to the runtime, and through it to the container process.
    Inherit {
        /// Process stdin.
        stdin: Stdio,
        /// Process stdout.
        stdout: Stdio,
        /// Process stderr.
        stderr: Stdio,
    },
}

/// Options of one `create` or `exec`.
pub struct Spawn {
    /// Pid file the runtime writes.
    pub pid_file: PathBuf,
    /// Console socket for a terminal.
    pub console_socket: Option<PathBuf>,
    /// The process's stdio (when there is no terminal).
    pub io: CallIo,
}

/// One runtime binary with its state root.
#[derive(Clone, Debug)]
pub struct Runc {
    /// Binary name or path (`runc`, `crun`).
    pub binary: String,
    /// `--root`: the runtime's state directory.
    pub root: PathBuf,
    /// `--log`: the runtime's JSON log (in the bundle).
    pub log: PathBuf,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--no-pivot` on create.
    pub no_pivot: bool,
    /// The reaper.
    pub monitor: Monitor,
}

/// How long a runtime call may take.
const TIMEOUT: Duration = Duration::from_secs(60);

impl Runc {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd.arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// Runs one subcommand and returns its stdout (empty unless captured).
    async fn run(&self, command: &'static str, args: Vec<OsString>, io: CallIo) -> Result<Vec<u8>> {
        let mut cmd = self.command();
        cmd.arg(command).args(&args);
        tracing::trace!(binary = %self.binary, command, ?args, "runtime call");
        let done = call(&self.monitor, cmd, &self.binary, command, io).await?;
        if done.status != 0 {
            let mut message = last_log_error(&self.log).unwrap_or_default();
            if message.is_empty() {
                message = String::from_utf8_lossy(&done.stderr).trim().to_owned();
            }
            return Err(RuncError::Failed {
                binary: self.binary.clone(),
                command,
                status: done.status,
                message,
            });
        }
        Ok(done.stdout)
    }

    /// `create`: sets up the container, its init process waits for `start`.
    pub async fn create(&self, id: &str, bundle: &Path, spawn: Spawn) -> Result<()> {
        self.bundle_call("create", &[], id, bundle, spawn).await
    }

    /// `run --detach`: create and start in one runtime call (runc
    /// documents it as exactly that), for a caller that would call start
    /// right after create anyway.
    pub async fn run_detached(&self, id: &str, bundle: &Path, spawn: Spawn) -> Result<()> {
        self.bundle_call("run", &["--detach"], id, bundle, spawn)
            .await
    }

    /// `create` or `run` of container `id` from `bundle`.
    async fn bundle_call(
        &self,
        command: &'static str,
        flags: &[&str],
        id: &str,
        bundle: &Path,
        spawn: Spawn,
    ) -> Result<()> {
        let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
        args.extend([
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            spawn.pid_file.into(),
        ]);
        if let Some(sock) = spawn.console_socket {
            args.push("--console-socket".into());
            args.push(sock.into());
        }
        if self.no_pivot {
            args.push("--no-pivot".into());
        }
        args.push(id.into());
        self.run(command, args, spawn.io).await.map(drop)
    }

    /// `start`: lets the init process (`pid`) run.
    ///
    /// A created runc container's init waits to open `exec.fifo` in the
    /// container's state directory for writing; `runc start` opens it for
    /// reading, reads the byte init writes before it execs, and removes
    /// the FIFO, which is how runc tells a running container from a
    /// created one. With `direct` (runc, and a spec without poststart
    /// hooks, which newer runc runs at start) the shim does exactly that
    /// itself and spares a runtime process per start. Anything else, or a
    /// FIFO that is not there (a container not in the created state), goes
    /// to the runtime, whose error then says why.
    pub async fn start(&self, id: &str, pid: u32, direct: bool) -> Result<()> {
        if direct && self.is_runc() {
            let fifo = self.root.join(id).join("exec.fifo");
            let released = tokio::task::spawn_blocking(move || release_init(&fifo, pid)).await;
            match released {
                Ok(Released::Started) => return Ok(()),
                Ok(Released::Dead) => {
                    return Err(RuncError::Failed {
                        binary: self.binary.clone(),
                        command: "start",
                        status: 1,
                        // runc's own words for this case.
                        message: "container process is already dead".into(),
                    });
                }
                Ok(Released::NotCreated) | Err(_) => {}
            }
        }
        self.run("start", vec![id.into()], CallIo::Capture)
            .await
            .map(drop)
    }

    /// Whether the binary is runc, whose `exec.fifo` handshake
    /// [`Runc::start`] knows.
    fn is_runc(&self) -> bool {
        Path::new(&self.binary).file_name() == Some(std::ffi::OsStr::new("runc"))
    }

    /// `exec --detach`: runs `process` (a JSON process spec file) in the
    /// container.
    pub async fn exec(&self, id: &str, process: &Path, spawn: Spawn) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "--detach".into(),
            "--process".into(),
            process.into(),
            "--pid-file".into(),
            spawn.pid_file.into(),
        ];
        if let Some(sock) = spawn.console_socket {
            args.push("--tty".into());
            args.push("--console-socket".into());
            args.push(sock.into());
        }
        args.push(id.into());
        self.run("exec", args, spawn.io).await.map(drop)
    }

    /// `kill`: signals the init process, or with `all` every process.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut args: Vec<OsString> = Vec::new();
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.run("kill", args, CallIo::Capture).await.map(drop)
    }

    /// `delete`: removes the container's runtime state.
    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args: Vec<OsString> = Vec::new();
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.run("delete", args, CallIo::Capture).await.map(drop)
    }

    /// `pause`: freezes every process.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.run("pause", vec![id.into()], CallIo::Capture)
            .await
            .map(drop)
    }

    /// `resume`: thaws them.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.run("resume", vec![id.into()], CallIo::Capture)
            .await
            .map(drop)
    }

    /// `update --resources`: applies a JSON LinuxResources file.
    pub async fn update(&self, id: &str, resources: &Path) -> Result<()> {
        let args = vec!["--resources".into(), resources.into(), id.into()];
        self.run("update", args, CallIo::Capture).await.map(drop)
    }

    /// `ps --format json`: pids of the container's processes.
    pub async fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self
            .run(
                "ps",
                vec!["--format".into(), "json".into(), id.into()],
                CallIo::Capture,
            )
            .await?;
        // runc prints `null` for an empty list.
        let pids: Option<Vec<u32>> =
            serde_json::from_slice(&out).map_err(|source| RuncError::Output {
                command: "ps",
                source,
            })?;
        Ok(pids.unwrap_or_default())
    }

    /// `events --stats`: one sample of the container's cgroup statistics.
    pub async fn stats(&self, id: &str) -> Result<crate::stats::Stats> {
        let out = self
            .run("events", vec!["--stats".into(), id.into()], CallIo::Capture)
            .await?;
        let event: crate::stats::Event =
            serde_json::from_slice(&out).map_err(|source| RuncError::Output {
                command: "events",
                source,
            })?;
        Ok(event.data)
    }
}

/// Whether the spec has poststart hooks: runc 1.1 runs them at create,
/// later runc at start, so such a container is started by the runtime.
/// A spec that cannot be read counts as having them.
pub fn has_poststart_hooks(text: &[u8]) -> bool {
    let Ok(doc) = hull_oci::document::Object::parse(text) else {
        return true;
    };
    match doc.object("hooks") {
        Ok(Some(hooks)) => match hooks.get::<Vec<serde_json::Value>>("poststart") {
            Ok(list) => !list.unwrap_or_default().is_empty(),
            Err(_) => true,
        },
        Ok(None) => false,
        Err(_) => true,
    }
}

/// How a direct start ended.
#[derive(Debug, PartialEq, Eq)]
enum Released {
    /// Init read its go-ahead and went on to exec.
    Started,
    /// Init died before it could.
    Dead,
    /// No FIFO to open: the container is not waiting to start.
    NotCreated,
}

/// Opens runc's exec FIFO for reading, takes what init writes there, and
/// removes the FIFO, as `runc start` does. While init has not opened its
/// end, its pid is checked every 100 ms so that a dead init is noticed.
fn release_init(fifo: &Path, pid: u32) -> Released {
    use nix::fcntl::{open, OFlag};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    // Non-blocking, so that the open itself never waits for a writer; a
    // FIFO opened so reports hang-up only after a writer came and went.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match open(fifo, flags, nix::sys::stat::Mode::empty()) {
        Ok(fd) => fd,
        Err(_) => return Released::NotCreated,
    };
    let mut got = 0usize;
    let mut buf = [0u8; 64];
    let mut read_some = |got: &mut usize| -> bool {
        // True at the end of the stream (the writer closed its end).
        loop {
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) => return true,
                Ok(n) => *got += n,
                Err(nix::Error::EINTR) => {}
                Err(_) => return false,
            }
        }
    };
    loop {
        let ready = {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(n) => n > 0,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return Released::NotCreated,
            }
        };
        if ready {
            if read_some(&mut got) {
                break;
            }
            continue;
        }
        if !alive(pid) {
            // It may have written and exited between two polls.
            read_some(&mut got);
            if got == 0 {
                return Released::Dead;
            }
            break;
        }
    }
    // runc removes the FIFO even when init wrote nothing (then it reports
    // the container already running): it has no use any more either way.
    let _ = std::fs::remove_file(fifo);
    if got == 0 {
        return Released::Dead;
    }
    Released::Started
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// What a finished helper process left.
pub struct Finished {
    /// Its exit status (128 + signal when a signal ended it).
    pub status: u32,
    /// Its stdout, when captured.
    pub stdout: Vec<u8>,
    /// Its stderr, when captured.
    pub stderr: Vec<u8>,
}

/// Spawns `cmd` (`binary`'s `command`, for errors) with `io`, and waits
/// for it through the reaper, killing it after a minute.
///
/// # Errors
/// When it cannot be started, times out, or its exit is lost.
pub async fn call(
    monitor: &Monitor,
    mut cmd: Command,
    binary: &str,
    command: &'static str,
    io: CallIo,
) -> Result<Finished> {
    let capture = matches!(io, CallIo::Capture);
    match io {
        CallIo::Capture => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        CallIo::Inherit {
            stdin,
            stdout,
            stderr,
        } => {
            cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        }
    }
    let mut rx = monitor.subscribe();
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            RuncError::BinaryNotFound {
                binary: binary.to_owned(),
            }
        } else {
            RuncError::Spawn {
                binary: binary.to_owned(),
                source,
            }
        }
    })?;
    // Our copies of the process's stdio close here, so its pipes see EOF
    // when the process alone holds them.
    drop(cmd);
    let pid = child.id();
    let readers = capture.then(|| {
        let out = child.stdout.take().map(read_all);
        let err = child.stderr.take().map(read_all);
        (out, err)
    });
    let exit = match tokio::time::timeout(TIMEOUT, reaper::wait_for(&mut rx, pid)).await {
        Ok(Ok(exit)) => exit,
        Ok(Err(_)) => return Err(RuncError::Lost { command }),
        Err(_) => {
            // A pid we spawned and have not reaped: it is still ours.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(RuncError::Timeout {
                binary: binary.to_owned(),
                command,
                secs: TIMEOUT.as_secs(),
            });
        }
    };
    // The reaper has collected the child; std must not wait for it.
    drop(child);
    let (stdout, stderr) = match readers {
        Some((out, err)) => (join(out).await, join(err).await),
        None => (Vec::new(), Vec::new()),
    };
    Ok(Finished {
        status: exit.status,
        stdout,
        stderr,
    })
}

/// Reads a pipe to its end on a blocking thread.
fn read_all(mut r: impl Read + Send + 'static) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read; the caller only reports it.
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

async fn join(h: Option<tokio::task::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    match h {
        Some(h) => h.await.unwrap_or_default(),
        None => Vec::new(),
    }
}

/// One line of the runtime's JSON log (logrus's fields).
#[derive(serde::Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// The message of the last error line in the runtime's JSON log.
fn last_log_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let l: LogLine = serde_json::from_str(line).ok()?;
        (l.level == "error").then_some(l.msg)
    })
}

/// Reads a pid file the runtime wrote.
pub fn read_pid(path: &Path) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "pid file holds no pid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fifo_in(dir: &Path) -> PathBuf {
        let path = dir.join("exec.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    #[test]
    fn a_waiting_init_is_released_and_the_fifo_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        // Stands in for runc init: it blocks opening its end, writes its
        // byte, closes.
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                f.write_all(b"0").unwrap();
            })
        };
        assert_eq!(release_init(&fifo, std::process::id()), Released::Started);
        writer.join().unwrap();
        assert!(
            !fifo.exists(),
            "runc tells created from running by the FIFO"
        );
    }

    #[test]
    fn a_dead_init_is_reported_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let began = std::time::Instant::now();
        assert_eq!(release_init(&fifo, pid), Released::Dead);
        assert!(began.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn no_fifo_leaves_the_start_to_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("exec.fifo");
        assert_eq!(
            release_init(&fifo, std::process::id()),
            Released::NotCreated
        );
    }

    #[test]
    fn poststart_hooks_keep_the_runtimes_start() {
        assert!(!has_poststart_hooks(br#"{"ociVersion":"1.0.2"}"#));
        assert!(!has_poststart_hooks(
            br#"{"hooks":{"prestart":[{"path":"/x"}]}}"#
        ));
        assert!(!has_poststart_hooks(br#"{"hooks":{"poststart":[]}}"#));
        assert!(has_poststart_hooks(
            br#"{"hooks":{"poststart":[{"path":"/x"}]}}"#
        ));
        assert!(has_poststart_hooks(b"not json"));
    }
}
