//! Exec and attach behind the streaming URLs, whatever the transport
//! (SPDY streams or WebSocket channels): the transport hands over the
//! client's stdin and resize streams and takes stdout and stderr; the
//! outcome becomes the status written on the error stream, as
//! `v4.channel.k8s.io` defines it (a Kubernetes `Status` object).
//!
//! Exec runs the command through the tasks service with FIFOs for its
//! stdio. Attach writes to the container's stdin FIFO and follows its CRI
//! log for output (the shim writes the log, so output is never lost to a
//! slow attach client).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hull_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use hull_proto::containerd::services::tasks::v1::ResizePtyRequest;
use hull_proto::runtime::v1::{AttachRequest, ExecRequest};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::exec::ExecIo;
use super::super::{request, Cri};

/// How often attach looks for new log lines.
const LOG_POLL: Duration = Duration::from_millis(100);

/// How long output may go on after the process exited (a child left
/// behind holding the pipes).
const DRAIN: Duration = Duration::from_secs(2);

/// A session's streams, as the transport delivers them.
#[derive(Debug, Default)]
pub struct Io {
    /// The client's stdin; ends when the client closes it.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Where stdout goes.
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// Where stderr goes.
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Terminal sizes, as JSON objects one after another.
    pub resize: Option<mpsc::Receiver<Bytes>>,
    /// Cancelled when the client goes away.
    pub hangup: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (attach: the container exited or
    /// the client left).
    Exited(i32),
    /// It could not run.
    Failed(String),
}

impl Outcome {
    /// The status object the error stream carries.
    pub fn status(&self) -> Vec<u8> {
        let v = match self {
            Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(msg) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": msg,
                "reason": "InternalError",
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// A terminal size as the resize stream carries it.
#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Sizes from the resize stream, however its bytes were split.
#[derive(Debug, Default)]
struct Sizes(Vec<u8>);

impl Sizes {
    fn push(&mut self, data: &[u8]) -> Vec<Size> {
        self.0.extend_from_slice(data);
        let mut out = Vec::new();
        let mut used = 0;
        {
            let mut it = serde_json::Deserializer::from_slice(&self.0).into_iter::<Size>();
            loop {
                match it.next() {
                    Some(Ok(s)) => {
                        used = it.byte_offset();
                        out.push(s);
                    }
                    // Incomplete: wait for more.
                    Some(Err(e)) if e.is_eof() => break,
                    // Garbage: drop what there is.
                    Some(Err(_)) => {
                        used = self.0.len();
                        break;
                    }
                    None => {
                        used = self.0.len();
                        break;
                    }
                }
            }
        }
        self.0.drain(..used);
        if self.0.len() > 4096 {
            self.0.clear();
        }
        out
    }
}

/// Opens a FIFO for writing once its reader (the shim) has it open.
async fn open_fifo_writer(path: &Path) -> std::io::Result<tokio::net::unix::pipe::Sender> {
    for _ in 0..500 {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(s) => return Ok(s),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("nothing reads the stdin FIFO"))
}

/// Copies the client's stdin into the FIFO at `path`; closing it when
/// the client's stdin ends.
fn feed_stdin(path: PathBuf, mut rx: mpsc::Receiver<Bytes>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut w) = open_fifo_writer(&path).await else {
            return;
        };
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
    })
}

/// Copies a FIFO to `tx` until its writers close it.
fn pump(
    mut r: tokio::net::unix::pipe::Receiver,
    tx: mpsc::Sender<Bytes>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

impl Cri {
    /// Applies the resize stream's sizes to `id`'s process `exec_id`.
    fn follow_resizes(
        self: &std::sync::Arc<Self>,
        id: String,
        exec_id: String,
        mut rx: mpsc::Receiver<Bytes>,
    ) -> tokio::task::JoinHandle<()> {
        let cri = self.clone();
        tokio::spawn(async move {
            let mut sizes = Sizes::default();
            while let Some(b) = rx.recv().await {
                for s in sizes.push(&b) {
                    let _ = cri
                        .tasks
                        .resize_pty(request(ResizePtyRequest {
                            container_id: id.clone(),
                            exec_id: exec_id.clone(),
                            width: u32::from(s.width),
                            height: u32::from(s.height),
                        }))
                        .await;
                }
            }
        })
    }

    /// Runs an exec the client streams.
    pub(super) async fn stream_exec(
        self: &std::sync::Arc<Self>,
        req: ExecRequest,
        io: Io,
    ) -> Outcome {
        let c = match self.running_container(&req.container_id) {
            Ok(c) => c,
            Err(s) => return Outcome::Failed(s.message().to_owned()),
        };
        let exec_id = format!("exec-{}", &super::super::new_id()[..16]);
        let dir = self.pods_state.join("exec").join(&exec_id);
        let outcome = self.run_stream_exec(&c.id, &exec_id, &dir, &req, io).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        outcome
    }

    async fn run_stream_exec(
        self: &std::sync::Arc<Self>,
        id: &str,
        exec_id: &str,
        dir: &Path,
        req: &ExecRequest,
        io: Io,
    ) -> Outcome {
        let Io {
            stdin,
            stdout,
            stderr,
            resize,
            hangup,
        } = io;
        let stderr = if req.tty { None } else { stderr };
        let fifo = |name: &str, wanted: bool| -> std::io::Result<String> {
            if !wanted {
                return Ok(String::new());
            }
            let p = dir.join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
            Ok(p.display().to_string())
        };
        let paths = std::fs::create_dir_all(dir).and_then(|()| {
            Ok(ExecIo {
                stdin: fifo("stdin", stdin.is_some())?,
                stdout: fifo("stdout", stdout.is_some())?,
                stderr: fifo("stderr", stderr.is_some())?,
                terminal: req.tty,
            })
        });
        let paths = match paths {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(format!("exec FIFOs: {e}")),
        };
        let open = |p: &str| {
            if p.is_empty() {
                return Ok(None);
            }
            tokio::net::unix::pipe::OpenOptions::new()
                .open_receiver(p)
                .map(Some)
        };
        let (out_r, err_r) = match (open(&paths.stdout), open(&paths.stderr)) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => return Outcome::Failed(format!("exec FIFOs: {e}")),
        };
        if let Err(s) = self.start_exec(id, exec_id, &req.cmd, &paths).await {
            return Outcome::Failed(s.message().to_owned());
        }
        let mut side = Vec::new();
        if let Some(rx) = stdin {
            side.push(feed_stdin(PathBuf::from(&paths.stdin), rx));
        }
        if let Some(rx) = resize {
            side.push(self.follow_resizes(id.to_owned(), exec_id.to_owned(), rx));
        }
        let mut outputs = Vec::new();
        if let (Some(r), Some(tx)) = (out_r, stdout) {
            outputs.push(pump(r, tx));
        }
        if let (Some(r), Some(tx)) = (err_r, stderr) {
            outputs.push(pump(r, tx));
        }
        let forever = Duration::from_secs(u64::from(u32::MAX));
        let exit = tokio::select! {
            e = self.wait(id, exec_id, forever) => e,
            () = hangup.cancelled() => {
                // Nobody is left to see it: containerd ends it too.
                let _ = self.kill(id, exec_id, libc::SIGKILL as u32).await;
                self.wait(id, exec_id, Duration::from_secs(5)).await
            }
        };
        for o in outputs {
            let abort = o.abort_handle();
            if tokio::time::timeout(DRAIN, o).await.is_err() {
                abort.abort();
            }
        }
        for t in side {
            t.abort();
        }
        self.delete_exec(id, exec_id).await;
        match exit {
            Ok(Some((code, _))) => Outcome::Exited(i32::try_from(code).unwrap_or(255)),
            Ok(None) => Outcome::Failed("the command did not end".into()),
            Err(s) => Outcome::Failed(s.message().to_owned()),
        }
    }

    /// Holds a writer on `id`'s stdin FIFO until the container is removed:
    /// the shim closes a container's stdin when the last writer leaves,
    /// which only `stdin_once` asks for.
    fn keep_stdin_open(&self, id: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut keepers = self.stdin_keepers.lock().unwrap_or_else(|p| p.into_inner());
        if keepers.contains_key(id) {
            return;
        }
        // Non-blocking: the shim reads the FIFO while the container runs;
        // with no reader there is nothing to keep open.
        if let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.stdin_path(id))
        {
            keepers.insert(id.to_owned(), f);
        }
    }

    /// Attaches the client to a running container until it exits or the
    /// client leaves.
    pub(super) async fn stream_attach(
        self: &std::sync::Arc<Self>,
        req: AttachRequest,
        io: Io,
    ) -> Outcome {
        let c = match self.running_container(&req.container_id) {
            Ok(c) => c,
            Err(s) => return Outcome::Failed(s.message().to_owned()),
        };
        let Io {
            stdin,
            stdout,
            stderr,
            resize,
            hangup,
        } = io;
        // The log is opened at its end before stdin is fed, so that no
        // answer to what the client sends is missed.
        let log = if c.state.log_path.is_empty() {
            None
        } else {
            let path = PathBuf::from(&c.state.log_path);
            let at = open_log(&path, true).await;
            Some((path, at))
        };
        let mut side = Vec::new();
        if let Some(rx) = stdin {
            if !c.config.stdin_once {
                self.keep_stdin_open(&c.id);
            }
            side.push(feed_stdin(self.stdin_path(&c.id), rx));
        }
        if let Some(rx) = resize {
            side.push(self.follow_resizes(c.id.clone(), String::new(), rx));
        }
        let stop = CancellationToken::new();
        let follow =
            log.map(|(path, at)| tokio::spawn(follow_log(path, at, stdout, stderr, stop.clone())));
        let forever = Duration::from_secs(u64::from(u32::MAX));
        tokio::select! {
            _ = self.wait(&c.id, "", forever) => {}
            () = hangup.cancelled() => {}
        }
        stop.cancel();
        if let Some(f) = follow {
            let _ = f.await;
        }
        for t in side {
            t.abort();
        }
        Outcome::Exited(0)
    }
}

/// One CRI log line's payload: its stream and its bytes (a full line
/// gets its newline back).
fn parse_log_line(line: &[u8]) -> Option<(bool, Vec<u8>)> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let _time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let mut text = parts.next().unwrap_or_default().to_vec();
    if tag.first() == Some(&b'F') {
        text.push(b'\n');
    }
    Some((stream == b"stderr", text))
}

/// Opens a CRI log (at its end when `at_end`), with its inode.
async fn open_log(path: &Path, at_end: bool) -> Option<(tokio::fs::File, u64)> {
    use std::os::unix::fs::MetadataExt;
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(path).await.ok()?;
    let ino = f.metadata().await.ok()?.ino();
    if at_end {
        f.seek(std::io::SeekFrom::End(0)).await.ok()?;
    }
    Some((f, ino))
}

/// Follows the CRI log at `path` from `file` (opened at its end),
/// sending each line's payload to its stream, until `stop` (then what
/// was written up to then is read). A log moved away (rotated) is picked
/// up again at its path.
async fn follow_log(
    path: PathBuf,
    mut file: Option<(tokio::fs::File, u64)>,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
    stop: CancellationToken,
) {
    use std::os::unix::fs::MetadataExt;
    let open = |at_end: bool| open_log(&path, at_end);
    let mut partial = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let last = stop.is_cancelled();
        if let Some((f, ino)) = file.as_mut() {
            loop {
                let n = match f.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                partial.extend_from_slice(&buf[..n]);
                while let Some(at) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=at).collect();
                    let Some((is_err, text)) = parse_log_line(&line[..line.len() - 1]) else {
                        continue;
                    };
                    let to = if is_err { &stderr } else { &stdout };
                    if let Some(tx) = to {
                        if tx.send(Bytes::from(text)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let moved = tokio::fs::metadata(&path)
                .await
                .map(|m| m.ino() != *ino)
                .unwrap_or(false);
            if moved {
                file = open(false).await;
                partial.clear();
                continue;
            }
        } else {
            file = open(false).await;
        }
        if last {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(LOG_POLL) => {}
            () = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_what_client_go_decodes() {
        let v: serde_json::Value = serde_json::from_slice(&Outcome::Exited(0).status()).unwrap();
        assert_eq!(v["status"], "Success");
        let v: serde_json::Value = serde_json::from_slice(&Outcome::Exited(3).status()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::Failed("no such container".into()).status()).unwrap();
        assert_eq!(v["message"], "no such container");
    }

    #[test]
    fn sizes_arrive_in_any_pieces() {
        let mut s = Sizes::default();
        assert!(s.push(br#"{"Width":80,"#).is_empty());
        assert_eq!(
            s.push(br#""Height":24}{"Width":1,"Height":2}"#),
            vec![
                Size {
                    width: 80,
                    height: 24
                },
                Size {
                    width: 1,
                    height: 2
                }
            ]
        );
        assert!(s.push(b"garbage").is_empty());
        assert_eq!(s.push(br#"{"Width":5,"Height":6}"#).len(), 1);
    }

    #[test]
    fn log_lines_give_back_their_payload() {
        assert_eq!(
            parse_log_line(b"2024-01-01T00:00:00.000000000Z stdout F hello world"),
            Some((false, b"hello world\n".to_vec()))
        );
        assert_eq!(
            parse_log_line(b"2024-01-01T00:00:00.000000000Z stderr P part"),
            Some((true, b"part".to_vec()))
        );
        assert_eq!(parse_log_line(b"junk"), None);
    }
}
