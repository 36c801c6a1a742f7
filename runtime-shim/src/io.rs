//! A process's stdio: FIFOs named by the client, `file://`, `binary://`,
//! and `json-file://` or `cri-log://` (a container log the shim writes
//! itself, in Docker's or the kubelet's format) URIs, and terminals.
//!
//! Output goes through a pipe that the shim copies into the client's FIFO.
//! The shim opens that FIFO read-write, so a write never fails when the
//! client is slow or gone: data waits in the FIFO for the next reader, as
//! containerd's shim does. Input is copied from the stdin FIFO into a pipe
//! that the shim closes on CloseIO, after draining what the client wrote.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::thread::JoinHandle;

use std::time::SystemTime;

use hull_logs::{LineSplitter, LogUri, LogWriter, Stream};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// The stdio a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Stdin FIFO, or empty.
    pub stdin: String,
    /// Stdout FIFO or URI, or empty.
    pub stdout: String,
    /// Stderr FIFO or URI, or empty.
    pub stderr: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
}

/// The copy threads and handles of one process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// Dropping this ends the stdin copy, which then closes the process's
    /// stdin; with the FIFO's path, to wake a copy still waiting to open it.
    stdin_close: Mutex<Option<(OwnedFd, PathBuf)>>,
    console: Option<File>,
    /// Output copies only: the stdin copy may wait for a client forever.
    copies: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        // A stdin copy waiting for the next client to attach ends with the
        // process.
        self.close_stdin();
    }
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo").finish_non_exhaustive()
    }
}

/// The stdio handed to the runtime for the process.
pub struct ChildIo {
    /// Process stdin.
    pub stdin: Stdio,
    /// Process stdout.
    pub stdout: Stdio,
    /// Process stderr.
    pub stderr: Stdio,
}

/// Stack of a copy thread: it holds one small buffer.
const COPY_STACK: usize = 64 * 1024;
const BUF: usize = 32 * 1024;

/// What a binary:// logger and the env it sees need.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Namespace of the container.
    pub namespace: String,
    /// Container id.
    pub id: String,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn spawn_copy(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(COPY_STACK)
        .spawn(f)
}

/// Copies `from` into `to` until `from` ends or `to` breaks.
fn copy(mut from: File, mut to: File) {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A terminal master reads EIO once its slave side closes.
            Err(_) => return,
        }
    }
}

fn open_fifo_writer(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Copies the stdin FIFO into `to` until the client closes its end (EOF)
/// or `cancel` becomes readable (CloseIO dropped its writer); in the
/// latter case what the client already wrote is delivered first. Returning
/// drops `to`, which closes the process's stdin. With `reopen` (a
/// terminal), EOF only means this client left: the FIFO is opened again
/// for the next one to attach, as Docker keeps a terminal's stdin open.
fn copy_stdin(path: PathBuf, cancel: OwnedFd, mut to: File, reopen: bool) {
    let mut buf = vec![0u8; BUF];
    loop {
        // Blocks until a client opens its end, as containerd's shim does;
        // a CloseIO before that wakes it by opening the FIFO itself.
        let Ok(fifo) = File::open(&path) else { return };
        if fcntl(&fifo, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_err() {
            return;
        }
        let mut fifo = fifo;
        // Reads what is there: Some(true) at EOF, Some(false) when
        // drained, None when the process side broke.
        let mut drain = |fifo: &mut File, to: &mut File| -> Option<bool> {
            loop {
                match fifo.read(&mut buf) {
                    Ok(0) => return Some(true),
                    Ok(n) => to.write_all(&buf[..n]).ok()?,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(false),
                    Err(_) => return None,
                }
            }
        };
        let eof = loop {
            let (data, cancelled) = {
                let mut fds = [
                    PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
                    PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => return,
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if cancelled {
                drain(&mut fifo, &mut to);
                return;
            }
            if data {
                match drain(&mut fifo, &mut to) {
                    Some(false) => {}
                    Some(true) => break true,
                    None => return,
                }
            }
        };
        if !(eof && reopen) {
            return;
        }
    }
}

/// One log file both output streams of a process write to.
type SharedLog = std::sync::Arc<Mutex<LogWriter>>;

/// Opens the log a `json-file://` URI names, if `uri` is one.
fn open_log(uri: &str) -> std::io::Result<Option<SharedLog>> {
    let parsed =
        LogUri::parse(uri).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let Some(mut parsed) = parsed else {
        return Ok(None);
    };
    if parsed.rotation.max_size == 0 {
        // The client chose nothing: the daemon's defaults.
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(size) = env("HULL_LOG_MAX_SIZE").filter(|s| *s > 0) {
            parsed.rotation.max_size = size;
            parsed.rotation.max_file =
                env("HULL_LOG_MAX_FILE").map_or(1, |n| n.clamp(1, 1000) as u32);
        }
    }
    let writer = LogWriter::open(&parsed).map_err(std::io::Error::other)?;
    Ok(Some(std::sync::Arc::new(Mutex::new(writer))))
}

/// Copies `from` into the log line by line, as `stream`, until it ends.
/// A failing write is reported once and the copy goes on draining, so the
/// process never blocks on a full disk.
fn copy_to_log(mut from: File, log: SharedLog, stream: Stream) {
    let mut buf = vec![0u8; BUF];
    let mut lines = LineSplitter::default();
    let mut reported = false;
    let mut write = |line: &[u8], partial: bool| {
        let res = log.lock().unwrap_or_else(|p| p.into_inner()).write_piece(
            stream,
            line,
            partial,
            SystemTime::now(),
        );
        if let Err(e) = res {
            if !reported {
                tracing::warn!(error = %e, "container log write failed");
                reported = true;
            }
        }
    };
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed_pieces(&buf[..n], &mut write),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A terminal master reads EIO once its slave side closes.
            Err(_) => break,
        }
    }
    lines.finish(|l| write(l, false));
}

/// Where one output stream goes.
fn output(path: &str, name: &str, copies: &mut Vec<JoinHandle<()>>) -> std::io::Result<Stdio> {
    if path.is_empty() {
        return Ok(Stdio::null());
    }
    if let Some(file) = path.strip_prefix("file://") {
        let file = Path::new(file);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        return Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?
            .into());
    }
    let fifo = open_fifo_writer(path.strip_prefix("fifo://").unwrap_or(path))?;
    let (r, w) = pipe()?;
    copies.push(spawn_copy(name, move || copy(File::from(r), fifo))?);
    Ok(w.into())
}

/// Starts a `binary://` logger with the process's stdout on fd 3 and stderr
/// on fd 4; it closes fd 5 once it is ready.
fn binary_logger(uri: &str, owner: &Owner) -> std::io::Result<(ChildIo, u32)> {
    let rest = uri.trim_start_matches("binary://");
    let (bin, query) = rest.split_once('?').unwrap_or((rest, ""));
    let args: Vec<String> = query
        .split('&')
        .filter(|a| !a.is_empty())
        .map(|a| match a.split_once('=') {
            Some((k, "")) => k.to_owned(),
            Some((k, v)) => format!("{k}={v}"),
            None => a.to_owned(),
        })
        .collect();
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(bin);
    cmd.args(&args)
        .env("CONTAINER_ID", &owner.id)
        .env("CONTAINER_NAMESPACE", &owner.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only calls dup2, which is async-signal-safe, on
    // fds that stay open in the parent until spawn returns. pre_exec is
    // std's and unsafe in itself; and nix's dup2 wants the target as an
    // OwnedFd, which fds 3 to 5 of the child are not.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop((out_r, err_r, ready_w));
    // The logger closes its end when ready; EOF (or its exit) is the signal.
    let mut ready = File::from(ready_r);
    let mut byte = [0u8; 1];
    let _ = ready.read(&mut byte);
    let pid = child.id();
    // The reaper collects the logger when it exits.
    drop(child);
    Ok((
        ChildIo {
            stdin: Stdio::null(),
            stdout: out_w.into(),
            stderr: err_w.into(),
        },
        pid,
    ))
}

impl ProcessIo {
    /// Sets up stdio for a process without a terminal, returning the copy
    /// state and what the runtime passes to the process.
    ///
    /// # Errors
    /// When a FIFO, file or pipe cannot be opened.
    pub fn open(paths: &StdioPaths, owner: &Owner) -> std::io::Result<(ProcessIo, ChildIo)> {
        let mut io = ProcessIo::default();
        let mut copies = Vec::new();
        // The stdin copy runs detached: it may wait for a client forever.
        let mut input: Vec<JoinHandle<()>> = Vec::new();
        let stdin = io.open_stdin(&paths.stdin, &mut input)?;
        let log = open_log(&paths.stdout)?;
        let child = if let Some(log) = log {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let l = log.clone();
            copies.push(spawn_copy("stdout", move || {
                copy_to_log(File::from(out_r), l, Stream::Stdout)
            })?);
            copies.push(spawn_copy("stderr", move || {
                copy_to_log(File::from(err_r), log, Stream::Stderr)
            })?);
            ChildIo {
                stdin: stdin.map_or_else(Stdio::null, Stdio::from),
                stdout: out_w.into(),
                stderr: err_w.into(),
            }
        } else if paths.stdout.starts_with("binary://") {
            let (mut child, _pid) = binary_logger(&paths.stdout, owner)?;
            child.stdin = stdin.map_or_else(Stdio::null, Stdio::from);
            child
        } else {
            ChildIo {
                stdin: stdin.map_or_else(Stdio::null, Stdio::from),
                stdout: output(&paths.stdout, "stdout", &mut copies)?,
                stderr: output(&paths.stderr, "stderr", &mut copies)?,
            }
        };
        io.copies = Mutex::new(copies);
        Ok((io, child))
    }

    /// Starts the stdin copy; returns the pipe end the process reads.
    fn open_stdin(
        &mut self,
        path: &str,
        copies: &mut Vec<JoinHandle<()>>,
    ) -> std::io::Result<Option<OwnedFd>> {
        if path.is_empty() {
            return Ok(None);
        }
        let (r, w) = pipe()?;
        let (cancel_r, cancel_w) = pipe()?;
        let fifo = PathBuf::from(path);
        let p = fifo.clone();
        copies.push(spawn_copy("stdin", move || {
            copy_stdin(p, cancel_r, File::from(w), false)
        })?);
        self.stdin_close = Mutex::new(Some((cancel_w, fifo)));
        Ok(Some(r))
    }

    /// Sets up stdio around a terminal master received from the runtime.
    ///
    /// # Errors
    /// When a FIFO cannot be opened or the master cannot be duplicated.
    pub fn with_console(paths: &StdioPaths, master: OwnedFd) -> std::io::Result<ProcessIo> {
        let mut io = ProcessIo::default();
        let mut copies = Vec::new();
        // The stdin copy runs detached: it may wait for a client forever.
        let mut input: Vec<JoinHandle<()>> = Vec::new();
        let master = File::from(master);
        if !paths.stdin.is_empty() {
            let (cancel_r, cancel_w) = pipe()?;
            let to = master.try_clone()?;
            let fifo = PathBuf::from(&paths.stdin);
            let p = fifo.clone();
            input.push(spawn_copy("stdin", move || {
                copy_stdin(p, cancel_r, to, true)
            })?);
            io.stdin_close = Mutex::new(Some((cancel_w, fifo)));
        }
        if let Some(log) = open_log(&paths.stdout)? {
            let from = master.try_clone()?;
            copies.push(spawn_copy("stdout", move || {
                copy_to_log(from, log, Stream::Stdout)
            })?);
        } else if !paths.stdout.is_empty() {
            let out = if let Some(file) = paths.stdout.strip_prefix("file://") {
                OpenOptions::new().create(true).append(true).open(file)?
            } else {
                open_fifo_writer(&paths.stdout)?
            };
            let from = master.try_clone()?;
            copies.push(spawn_copy("stdout", move || copy(from, out))?);
        }
        io.console = Some(master);
        io.copies = Mutex::new(copies);
        Ok(io)
    }

    /// Closes the process's stdin once what the client wrote is delivered.
    pub fn close_stdin(&self) {
        let taken = self
            .stdin_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((cancel, fifo)) = taken {
            drop(cancel);
            // Wake a copy still blocked opening the FIFO; ENXIO means no
            // reader waits there, which is fine.
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(OFlag::O_NONBLOCK.bits())
                .open(&fifo);
        }
    }

    /// Sets the terminal size; a process without a terminal has none to
    /// resize, which is not an error (as in containerd).
    ///
    /// # Errors
    /// When the ioctl fails.
    pub fn resize(&self, width: u32, height: u32) -> std::io::Result<()> {
        let Some(console) = &self.console else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass.
        // nix offers no safe call for it, only macros that generate unsafe
        // ioctl wrappers.
        if unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the output copies have all finished.
    pub fn finished(&self) -> bool {
        self.copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .all(|h| h.is_finished())
    }
}

/// A listening console socket for one `create` or `exec --tty`.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    _dir: TempDirGuard,
}

struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        // Best effort: a leftover empty directory in /tmp harms nobody.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ConsoleSocket {
    /// Listens on a fresh socket in a private temporary directory (short
    /// enough for sun_path wherever the bundle is).
    ///
    /// # Errors
    /// When the directory or socket cannot be created.
    pub fn new() -> std::io::Result<ConsoleSocket> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hull-pty-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let guard = TempDirGuard(dir.clone());
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket {
            listener,
            path,
            _dir: guard,
        })
    }

    /// The socket path for `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the terminal master the runtime sent. Call after the
    /// runtime returned successfully: its connection is already queued.
    ///
    /// # Errors
    /// When no connection or no fd arrived.
    pub fn receive(&self) -> std::io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let (stream, _) = self.listener.accept()?;
        stream.set_nonblocking(false)?;
        recv_fd(&stream)
    }
}

/// Receives one fd sent with SCM_RIGHTS.
fn recv_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut control = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = msg.cmsgs()?.filter_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => Some(fds),
        _ => None,
    });
    let fd = received
        .next()
        .and_then(|fds| fds.first().copied())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no terminal fd received")
        })?;
    // SAFETY: the fd was just received with SCM_RIGHTS: this process is its
    // only owner. nix hands received fds over as raw numbers.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn output_waits_in_the_fifo_for_a_slow_reader() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        mkfifo(&out);
        let paths = StdioPaths {
            stdout: out.to_str().unwrap().to_owned(),
            ..Default::default()
        };
        let owner = Owner {
            namespace: "n".into(),
            id: "c".into(),
        };
        // A client that opened its end but reads only after the exit.
        let mut r = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(&out)
            .unwrap();
        let (io, child) = ProcessIo::open(&paths, &owner).unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo hello"])
            .stdin(child.stdin)
            .stdout(child.stdout)
            .stderr(child.stderr);
        assert!(cmd.status().unwrap().success());
        drop(cmd);
        // Nobody read yet: the copy finishes anyway, into the FIFO.
        for _ in 0..200 {
            if io.finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(io.finished());
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        assert_eq!(s, "hello\n");
    }

    #[test]
    fn close_stdin_delivers_what_was_written_then_eof() {
        let dir = tempfile::tempdir().unwrap();
        let inp = dir.path().join("in");
        let out = dir.path().join("out.log");
        mkfifo(&inp);
        let paths = StdioPaths {
            stdin: inp.to_str().unwrap().to_owned(),
            stdout: format!("file://{}", out.display()),
            ..Default::default()
        };
        let owner = Owner {
            namespace: "n".into(),
            id: "c".into(),
        };
        let (io, child) = ProcessIo::open(&paths, &owner).unwrap();
        let mut w = OpenOptions::new().write(true).open(&inp).unwrap();
        w.write_all(b"abc\n").unwrap();
        drop(w);
        io.close_stdin();
        let mut cmd = std::process::Command::new("cat");
        cmd.stdin(child.stdin)
            .stdout(child.stdout)
            .stderr(child.stderr);
        assert!(cmd.status().unwrap().success());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "abc\n");
    }

    #[test]
    fn json_file_logs_both_streams_in_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c/c-json.log");
        let uri = format!("json-file://{}?max-size=1m&max-file=2", log.display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let owner = Owner {
            namespace: "n".into(),
            id: "c".into(),
        };
        let (io, child) = ProcessIo::open(&paths, &owner).unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; printf tail"])
            .stdin(child.stdin)
            .stdout(child.stdout)
            .stderr(child.stderr);
        assert!(cmd.status().unwrap().success());
        drop(cmd);
        for _ in 0..200 {
            if io.finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (entries, _) = hull_logs::read(&log, 2).unwrap();
        let mut got: Vec<(Stream, String)> =
            entries.into_iter().map(|e| (e.stream, e.log)).collect();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            [
                (Stream::Stderr, "err\n".to_owned()),
                (Stream::Stdout, "out\n".to_owned()),
                (Stream::Stdout, "tail".to_owned()),
            ]
        );
    }

    #[test]
    fn cri_logs_are_in_the_kubelets_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("pod/c/0.log");
        let uri = format!("cri-log://{}", log.display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let owner = Owner {
            namespace: "k8s.io".into(),
            id: "c".into(),
        };
        let (io, child) = ProcessIo::open(&paths, &owner).unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"])
            .stdin(child.stdin)
            .stdout(child.stdout)
            .stderr(child.stderr);
        assert!(cmd.status().unwrap().success());
        drop(cmd);
        for _ in 0..200 {
            if io.finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let mut tails: Vec<String> = text
            .lines()
            .map(|l| {
                let (time, rest) = l.split_once(' ').unwrap();
                assert!(time.ends_with('Z') && time.contains('T'), "{l}");
                rest.to_owned()
            })
            .collect();
        tails.sort();
        assert_eq!(tails, ["stderr F err", "stdout F out"]);
    }
}
