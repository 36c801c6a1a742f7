//! One shim process as hulld sees it: how it is started, called, and
//! cleaned up after when it dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hull_proto::containerd::task::v2 as api;
use hull_proto::headers;
use hull_ttrpc::frame::KeyValue;
use hull_ttrpc::Client;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::TaskError;

/// The shim v2 task service name.
const TASK_SERVICE: &str = "containerd.task.v2.Task";

/// How long `start` and `delete` of a shim binary may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The exit reported for a task whose shim died, as containerd reports it.
pub const DEAD_SHIM_STATUS: u32 = 255;

/// How hulld invokes shim binaries.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// hulld's gRPC socket (`-address`).
    pub address: PathBuf,
    /// hulld's ttrpc socket (`TTRPC_ADDRESS`).
    pub ttrpc_address: PathBuf,
    /// hulld's binary (`-publish-binary`).
    pub publish_binary: PathBuf,
    /// Rotation of json-file logs whose URI sets none, handed to hull-shim
    /// as `HULL_LOG_MAX_SIZE` (bytes) and `HULL_LOG_MAX_FILE`.
    pub log_defaults: (u64, u32),
    /// Shims log at debug level too (`-debug`), as containerd starts them
    /// when it logs at debug.
    pub debug: bool,
}

/// A connected shim serving one task.
#[derive(Debug)]
pub struct Shim {
    /// Namespace of the task.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// The shim binary, for `delete` after it dies.
    pub binary: PathBuf,
    /// Its socket; the containers of one pod share it.
    pub address: String,
    client: Client,
    /// Set once the task is being deleted on purpose, so that the closing
    /// connection is not taken for a crash.
    pub deleting: std::sync::atomic::AtomicBool,
    /// Set when the shim died and was cleaned up after.
    pub dead: watch::Sender<Option<api::WaitResponse>>,
    /// Stops forwarding the shim's log.
    pub log_stop: tokio_util::sync::CancellationToken,
    /// Held by a delete of the task, so that two (a client's and an exit
    /// handler's) run one after the other.
    pub delete_lock: tokio::sync::Mutex<()>,
}

fn md(ns: &str) -> Vec<KeyValue> {
    vec![KeyValue {
        key: headers::NAMESPACE_TTRPC.to_owned(),
        value: ns.to_owned(),
    }]
}

impl Shim {
    /// Wraps a connected client.
    pub fn new(
        namespace: String,
        id: String,
        bundle: PathBuf,
        binary: PathBuf,
        address: String,
        client: Client,
    ) -> Shim {
        Shim {
            namespace,
            id,
            bundle,
            binary,
            address,
            client,
            deleting: Default::default(),
            dead: watch::channel(None).0,
            log_stop: Default::default(),
            delete_lock: Default::default(),
        }
    }

    /// Calls a task method on the shim.
    ///
    /// # Errors
    /// The shim's status, or Unavailable when it cannot be reached.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, TaskError> {
        self.call_with(method, req, md(&self.namespace)).await
    }

    async fn call_with<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
        metadata: Vec<KeyValue>,
    ) -> Result<Resp, TaskError> {
        let result = self
            .client
            .call(TASK_SERVICE, method, req, metadata, None)
            .await;
        result.map_err(|source| {
            let gone = matches!(
                source,
                hull_ttrpc::Error::Closed | hull_ttrpc::Error::Io { .. }
            );
            if gone && self.deleting.load(std::sync::atomic::Ordering::SeqCst) {
                // The task was deleted and its shim told to go: a call
                // that finds the shim gone finds no task, not an outage.
                TaskError::NotFound(self.id.clone())
            } else {
                TaskError::Shim {
                    id: self.id.clone(),
                    source,
                }
            }
        })
    }

    /// Create, with [`headers::START_AT_CREATE`] when `and_start`.
    ///
    /// # Errors
    /// As [`Shim::call`].
    pub async fn call_create(
        &self,
        req: &api::CreateTaskRequest,
        and_start: bool,
    ) -> Result<api::CreateTaskResponse, TaskError> {
        let mut metadata = md(&self.namespace);
        if and_start {
            metadata.push(KeyValue {
                key: headers::START_AT_CREATE.to_owned(),
                value: "true".to_owned(),
            });
        }
        self.call_with("Create", req, metadata).await
    }

    /// Asks the shim to exit (with `now`, even while it has containers),
    /// marking the coming close of its connection as expected. The shim may
    /// close the connection before it answers, so the answer is ignored.
    pub async fn shutdown(&self, now: bool) {
        self.deleting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let req = api::ShutdownRequest {
            id: self.id.clone(),
            now,
        };
        let _ = self.call::<_, ()>("Shutdown", &req).await;
    }

    /// Resolves when the connection to the shim closes.
    pub async fn closed(&self) {
        self.client.closed().await
    }
}

/// A shim binary invoked as containerd invokes shims: flags, the bundle as
/// working directory, and the daemon's ttrpc socket in `TTRPC_ADDRESS`.
fn command(
    inv: &Invocation,
    binary: &Path,
    namespace: &str,
    id: &str,
    bundle: &Path,
    action: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("-namespace")
        .arg(namespace)
        .arg("-address")
        .arg(&inv.address)
        .arg("-publish-binary")
        .arg(&inv.publish_binary)
        .arg("-id")
        .arg(id);
    if inv.debug {
        cmd.arg("-debug");
    }
    if action == "delete" {
        // As containerd does: the bundle named as well as entered.
        cmd.arg("-bundle").arg(bundle);
    }
    cmd.arg(action)
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", &inv.ttrpc_address)
        .env("HULL_LOG_MAX_SIZE", inv.log_defaults.0.to_string())
        .env("HULL_LOG_MAX_FILE", inv.log_defaults.1.to_string());
    cmd
}

/// Runs `<binary> ... start` in `bundle` and returns the address it prints.
///
/// # Errors
/// When the binary cannot run, fails, or prints no address.
pub async fn start(
    inv: &Invocation,
    binary: &Path,
    namespace: &str,
    id: &str,
    bundle: &Path,
    options: Option<&prost_types::Any>,
) -> Result<String, TaskError> {
    let mut cmd = command(inv, binary, namespace, id, bundle, "start");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let fail = |message: String| TaskError::ShimStart {
        binary: binary.to_owned(),
        message,
    };
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // containerd hands the runtime options to `start` on stdin; a shim
        // that does not read them may close stdin first, which is fine.
        let bytes = options.map(Message::encode_to_vec).unwrap_or_default();
        let _ = stdin.write_all(&bytes).await;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail("timed out".to_owned()))?
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if address.is_empty() {
        return Err(fail("printed no address".to_owned()));
    }
    Ok(address)
}

/// Runs `<binary> ... delete` in `bundle` after its shim died, and returns
/// what it reports (or a SIGKILL exit when it reports nothing).
pub async fn delete_dead(
    inv: &Invocation,
    binary: &Path,
    namespace: &str,
    id: &str,
    bundle: &Path,
) -> api::DeleteResponse {
    let mut cmd = command(inv, binary, namespace, id, bundle, "delete");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let fallback = api::DeleteResponse {
        pid: 0,
        exit_status: 128 + 9,
        exited_at: Some(crate::timestamp(crate::now_nanos())),
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            api::DeleteResponse::decode(out.stdout.as_slice()).unwrap_or(fallback)
        }
        Ok(Ok(out)) => {
            tracing::warn!(%id, binary = %binary.display(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "shim delete failed");
            fallback
        }
        Ok(Err(e)) => {
            tracing::warn!(%id, binary = %binary.display(), cause = %e, "shim delete failed");
            fallback
        }
        Err(_) => {
            tracing::warn!(%id, binary = %binary.display(), "shim delete timed out");
            fallback
        }
    }
}

/// Connects to a shim address as printed by `start` (`unix://PATH`).
///
/// # Errors
/// Unavailable when nothing answers there.
pub async fn connect(address: &str, id: &str) -> Result<Client, TaskError> {
    Client::connect(address)
        .await
        .map_err(|source| TaskError::Shim {
            id: id.to_owned(),
            source,
        })
}

/// Creates the bundle's `log` FIFO, where containerd's shims write their
/// own log (they open it when serving), and copies what arrives into
/// hulld's log until `stop`. hulld holds the FIFO open read-write, so a
/// shim never sees a broken pipe while hulld runs.
///
/// # Errors
/// When the FIFO cannot be created or opened.
pub fn forward_log(
    bundle: &Path,
    id: &str,
    tasks: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let path = bundle.join("log");
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)?;
    let id = id.to_owned();
    tasks.spawn(async move {
        let mut lines = tokio::io::BufReader::new(rx).lines();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                line = lines.next_line() => match line {
                    Ok(Some(l)) => tracing::debug!(%id, line = %l, "shim log"),
                    _ => return,
                },
            }
        }
    });
    Ok(())
}
