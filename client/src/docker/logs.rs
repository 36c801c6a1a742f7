//! `logs` and attaching: reading the container's log file (written by the
//! shim, or by hullctl as containerd's logger), and following it while the
//! container runs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hull_logs::{Entry, Follower};
use hull_proto::containerd::services::containers::v1::Container;
use hull_proto::containerd::services::tasks::v1::WaitRequest;
use hull_proto::containerd::v1::types::Status as TaskStatus;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::Status;

use super::{labels, local, Docker};
use crate::Error;

/// What `logs` shows.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep printing new lines until the container stops.
    pub follow: bool,
    /// Only the last N lines (before following).
    pub tail: Option<usize>,
    /// Only lines from this time on.
    pub since: Option<SystemTime>,
    /// Only lines before this time.
    pub until: Option<SystemTime>,
}

/// How often a followed log is read again.
const POLL: Duration = Duration::from_millis(20);

/// The detach sequence Docker uses: Ctrl-P Ctrl-Q.
pub const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    /// The container exited with this code.
    Exited(u32),
    /// The person typed the detach keys; the container goes on.
    Detached,
}

fn log_path(c: &Container) -> Result<(PathBuf, u32), Error> {
    let path = c.labels.get(labels::LOG_PATH).ok_or_else(|| {
        Error::Status(Status::failed_precondition(format!(
            "container {} has no log: it was not created by a Docker-style client",
            c.id
        )))
    })?;
    let max_file = c
        .labels
        .get(labels::LOG_MAX_FILE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Ok((PathBuf::from(path), max_file))
}

async fn read_all(path: PathBuf, max_file: u32) -> Result<(Vec<Entry>, Follower), Error> {
    let p = path.clone();
    tokio::task::spawn_blocking(move || hull_logs::read(&p, max_file))
        .await
        .map_err(|e| Error::Status(Status::internal(format!("read log: {e}"))))?
        .map_err(|e| local(format!("read {}", path.display()))(std::io::Error::other(e)))
}

impl Docker {
    async fn running(&self, id: &str) -> Result<bool, Error> {
        Ok(self.task_of(id).await?.is_some_and(|p| {
            p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32
        }))
    }

    /// Calls `out` for each line of container `key`'s log that `opts`
    /// select; with `follow`, goes on until the container stops.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition for a container without a log.
    pub async fn logs(
        &self,
        key: &str,
        opts: &LogOptions,
        mut out: impl FnMut(&Entry) + Send,
    ) -> Result<(), Error> {
        let c = self.find(key).await?;
        let (path, max_file) = log_path(&c)?;
        let (mut entries, mut follower) = read_all(path, max_file).await?;
        let keep = |e: &Entry| {
            opts.since.is_none_or(|s| e.time >= s) && opts.until.is_none_or(|u| e.time < u)
        };
        entries.retain(keep);
        let skip = opts.tail.map_or(0, |n| entries.len().saturating_sub(n));
        for e in &entries[skip..] {
            out(e);
        }
        if !opts.follow {
            return Ok(());
        }
        if !self.running(&c.id).await? {
            // Nothing more will come.
            let rest = follower
                .poll()
                .map_err(|e| local("read log")(std::io::Error::other(e)))?;
            rest.iter().filter(|e| keep(e)).for_each(&mut out);
            return Ok(());
        }
        let mut tasks = self.client.tasks();
        let wait = tasks.wait(WaitRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
        });
        tokio::pin!(wait);
        loop {
            let done = tokio::select! {
                _ = &mut wait => true,
                _ = tokio::time::sleep(POLL) => false,
            };
            let new = follower
                .poll()
                .map_err(|e| local("read log")(std::io::Error::other(e)))?;
            new.iter().filter(|e| keep(e)).for_each(&mut out);
            if done {
                return Ok(());
            }
        }
    }

    /// Attaches to running container `key`: what it prints from now on
    /// goes to `stdout`/`stderr`, and `stdin` (when the container keeps a
    /// stdin pipe) goes to it. Returns when it exits, or when `stdin`
    /// carries Docker's detach keys (Ctrl-P Ctrl-Q) with `detach_keys`.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition when it is not running.
    pub async fn attach<I, O, E>(
        &self,
        key: &str,
        stdin: Option<I>,
        stdout: O,
        stderr: E,
        detach_keys: bool,
    ) -> Result<AttachEnd, Error>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        let c = self.find(key).await?;
        if !self.running(&c.id).await? {
            return Err(Error::Status(Status::failed_precondition(
                "You cannot attach to a stopped container, start it first",
            )));
        }
        let follower = follow_from_end(&c).await?;
        self.attached(&c, follower, stdin, stdout, stderr, detach_keys)
            .await
    }

    /// Starts container `key` attached, as `docker start -a` and a
    /// foreground `docker run` do: nothing it prints is missed.
    ///
    /// # Errors
    /// As [`Docker::start`].
    pub async fn start_attached<I, O, E>(
        &self,
        key: &str,
        stdin: Option<I>,
        stdout: O,
        stderr: E,
        detach_keys: bool,
    ) -> Result<AttachEnd, Error>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        let c = self.find(key).await?;
        let follower = follow_from_end(&c).await?;
        self.start(&c.id).await?;
        self.attached(&c, follower, stdin, stdout, stderr, detach_keys)
            .await
    }

    async fn attached<I, O, E>(
        &self,
        c: &Container,
        mut follower: Follower,
        stdin: Option<I>,
        mut stdout: O,
        mut stderr: E,
        detach_keys: bool,
    ) -> Result<AttachEnd, Error>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        let (detach_tx, mut detached) = tokio::sync::oneshot::channel::<()>();
        let fifo = self.container_dir(&c.id).join("stdin");
        let wants_stdin = c.labels.get(labels::STDIN).is_some_and(|v| v == "true");
        let input = match (stdin, wants_stdin) {
            (Some(stdin), true) => Some(tokio::spawn(forward_stdin(
                stdin,
                fifo,
                detach_keys,
                detach_tx,
            ))),
            _ => {
                drop(detach_tx);
                None
            }
        };
        let mut detach_open = input.is_some();
        // The exit ends the session; the shim reports it once the output
        // is in the log.
        let mut tasks = self.client.tasks();
        let wait = tasks.wait(WaitRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
        });
        tokio::pin!(wait);
        let end = loop {
            tokio::select! {
                r = &mut detached, if detach_open => {
                    detach_open = false;
                    if r.is_ok() {
                        break AttachEnd::Detached;
                    }
                }
                w = &mut wait => {
                    let code = w?.into_inner().exit_status;
                    let rest = follower
                        .poll()
                        .map_err(|e| local("read log")(std::io::Error::other(e)))?;
                    write_entries(&rest, &mut stdout, &mut stderr).await;
                    break AttachEnd::Exited(code);
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            let new = follower
                .poll()
                .map_err(|e| local("read log")(std::io::Error::other(e)))?;
            write_entries(&new, &mut stdout, &mut stderr).await;
        };
        if let Some(t) = input {
            t.abort();
        }
        Ok(end)
    }
}

/// A follower of `c`'s log from its current end.
async fn follow_from_end(c: &Container) -> Result<Follower, Error> {
    let (path, _) = log_path(c)?;
    tokio::task::spawn_blocking(move || -> Result<Follower, hull_logs::LogError> {
        let mut f = Follower::open(&path)?;
        f.poll()?;
        Ok(f)
    })
    .await
    .map_err(|e| Error::Status(Status::internal(e.to_string())))?
    .map_err(|e| local("open log")(std::io::Error::other(e)))
}

async fn write_entries<O, E>(entries: &[Entry], stdout: &mut O, stderr: &mut E)
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    for e in entries {
        let _ = match e.stream {
            hull_logs::Stream::Stdout => stdout.write_all(e.log.as_bytes()).await,
            hull_logs::Stream::Stderr => stderr.write_all(e.log.as_bytes()).await,
        };
    }
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
}

/// Opens the container's stdin FIFO for writing, waiting for the shim to
/// open its end.
pub(crate) async fn open_fifo_writer(
    path: &std::path::Path,
) -> std::io::Result<tokio::net::unix::pipe::Sender> {
    for _ in 0..200 {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(s) => return Ok(s),
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "the container does not read its stdin",
    ))
}

/// Copies `stdin` into the FIFO until it ends; with `detach_keys`, stops
/// at Ctrl-P Ctrl-Q (without passing them on) and reports it.
async fn forward_stdin<I: AsyncRead + Unpin>(
    mut stdin: I,
    fifo: PathBuf,
    detach_keys: bool,
    detached: tokio::sync::oneshot::Sender<()>,
) {
    let Ok(mut to) = open_fifo_writer(&fifo).await else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    let mut held = false;
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut data: Vec<u8> = Vec::with_capacity(n + 1);
        for &b in &buf[..n] {
            if detach_keys {
                if held {
                    held = false;
                    if b == DETACH_KEYS[1] {
                        let _ = to.write_all(&data).await;
                        let _ = detached.send(());
                        return;
                    }
                    data.push(DETACH_KEYS[0]);
                }
                if b == DETACH_KEYS[0] {
                    held = true;
                    continue;
                }
            }
            data.push(b);
        }
        if to.write_all(&data).await.is_err() {
            return;
        }
    }
}
