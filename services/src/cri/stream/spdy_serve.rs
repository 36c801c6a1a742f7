//! The streaming protocols over a SPDY session: remotecommand
//! (`v4.channel.k8s.io`: the client opens an error stream, then stdin,
//! stdout, stderr and resize streams as the request asks, each named by
//! its `streamType` header) and `portforward.k8s.io` (a data and an error
//! stream per forwarded connection, paired by `requestID`, naming their
//! `port`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::remotecommand::Io;
use super::session::{Incoming, Session};
use super::{portforward, Pending};
use crate::cri::Cri;

/// How long the client has to open the streams it asked for, as the
/// kubelet allows.
const STREAM_CREATION: Duration = Duration::from_secs(30);

/// Serves `pending` over the upgraded connection `io`.
pub async fn serve<T>(cri: Arc<Cri>, io: T, pending: Pending)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, incoming) = Session::start(io);
    match pending {
        Pending::Exec(req) => {
            let wants = Wants {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr && !req.tty,
                tty: req.tty,
            };
            command(&session, incoming, wants, |io| async move {
                cri.stream_exec(req, io).await
            })
            .await;
        }
        Pending::Attach(req) => {
            let wants = Wants {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr && !req.tty,
                tty: req.tty,
            };
            command(&session, incoming, wants, |io| async move {
                cri.stream_attach(req, io).await
            })
            .await;
        }
        Pending::PortForward(req) => {
            port_forward(&cri, &session, incoming, &req.pod_sandbox_id).await;
        }
    }
    session.end().await;
}

/// The streams a remotecommand session has.
#[derive(Debug, Clone, Copy)]
struct Wants {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// Copies what `rx` gets to stream `id`, then ends it.
fn to_stream(session: &Session, id: u32) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let session = session.clone();
    let task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if !session.write(id, &b).await {
                return;
            }
        }
        session.close(id).await;
    });
    (tx, task)
}

async fn command<F, Fut>(
    session: &Session,
    mut incoming: mpsc::Receiver<Incoming>,
    wants: Wants,
    run: F,
) where
    F: FnOnce(Io) -> Fut,
    Fut: std::future::Future<Output = super::remotecommand::Outcome>,
{
    let mut streams: HashMap<String, Incoming> = HashMap::new();
    let mut needed = vec!["error"];
    for (want, name) in [
        (wants.stdin, "stdin"),
        (wants.stdout, "stdout"),
        (wants.stderr, "stderr"),
        (wants.tty, "resize"),
    ] {
        if want {
            needed.push(name);
        }
    }
    let deadline = tokio::time::Instant::now() + STREAM_CREATION;
    while !needed.iter().all(|n| streams.contains_key(*n)) {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(s)) => {
                let kind = s.header("streamtype").unwrap_or_default().to_owned();
                if needed.contains(&kind.as_str()) && !streams.contains_key(&kind) {
                    streams.insert(kind, s);
                } else {
                    // Not asked for: ended at once.
                    session.close(s.id).await;
                }
            }
            // Gone, or too slow.
            Ok(None) | Err(_) => return,
        }
    }
    let hangup = CancellationToken::new();
    {
        // Streams opened later are not used; the end of the connection
        // is the client hanging up.
        let hangup = hangup.clone();
        let session = session.clone();
        tokio::spawn(async move {
            while let Some(s) = incoming.recv().await {
                session.close(s.id).await;
            }
            hangup.cancel();
        });
    }
    let mut take = |name: &str| streams.remove(name);
    let error = take("error").map(|s| s.id).unwrap_or_default();
    let mut ids = vec![error];
    let mut io = Io {
        hangup: hangup.clone(),
        ..Io::default()
    };
    if let Some(s) = take("stdin") {
        ids.push(s.id);
        io.stdin = Some(s.data);
    }
    if let Some(s) = take("resize") {
        ids.push(s.id);
        io.resize = Some(s.data);
    }
    let mut writers = Vec::new();
    if let Some(s) = take("stdout") {
        let (tx, task) = to_stream(session, s.id);
        io.stdout = Some(tx);
        writers.push(task);
    }
    if let Some(s) = take("stderr") {
        let (tx, task) = to_stream(session, s.id);
        io.stderr = Some(tx);
        writers.push(task);
    }
    let outcome = run(io).await;
    for w in writers {
        let _ = w.await;
    }
    if !hangup.is_cancelled() {
        session.write(error, &outcome.status()).await;
    }
    for id in ids {
        session.close(id).await;
    }
}

/// A forwarded connection's two streams.
#[derive(Debug, Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
}

async fn port_forward(
    cri: &Arc<Cri>,
    session: &Session,
    mut incoming: mpsc::Receiver<Incoming>,
    pod_id: &str,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut running = Vec::new();
    while let Some(s) = incoming.recv().await {
        let port = s.header("port").and_then(|p| p.parse::<u16>().ok());
        let kind = s.header("streamtype").unwrap_or_default().to_owned();
        let Some(port) = port.filter(|p| *p > 0) else {
            session.write(s.id, b"invalid or missing port").await;
            session.close(s.id).await;
            continue;
        };
        let key = s
            .header("requestid")
            .map_or_else(|| port.to_string(), str::to_owned);
        let pair = pairs.entry(key.clone()).or_default();
        match kind.as_str() {
            "error" if pair.error.is_none() => pair.error = Some(s),
            "data" if pair.data.is_none() => pair.data = Some(s),
            _ => {
                session.close(s.id).await;
                continue;
            }
        }
        if pair.error.is_none() || pair.data.is_none() {
            continue;
        }
        let Some(Pair {
            error: Some(error),
            data: Some(data),
        }) = pairs.remove(&key)
        else {
            continue;
        };
        let cri = cri.clone();
        let session = session.clone();
        let pod_id = pod_id.to_owned();
        running.push(tokio::spawn(async move {
            let (tx, writer) = to_stream(&session, data.id);
            let r = portforward::forward(&cri, &pod_id, port, data.data, tx).await;
            let _ = writer.await;
            if let Err(msg) = r {
                session.write(error.id, msg.as_bytes()).await;
            }
            session.close(error.id).await;
        }));
    }
    // The connection is gone: so are its forwards.
    for r in running {
        r.abort();
    }
}
