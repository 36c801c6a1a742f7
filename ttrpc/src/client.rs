//! A ttrpc client: one connection, many concurrent calls.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::frame::{self, KeyValue, Request, Response, TYPE_REQUEST, TYPE_RESPONSE};
use crate::{Error, Result};

type Pending = HashMap<u32, oneshot::Sender<Response>>;

struct Shared {
    /// Calls waiting for their response; `None` once the connection is gone.
    pending: Mutex<Option<Pending>>,
    closed: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        // A panic while holding this lock leaves the map consistent (each
        // operation is one insert or remove), so a poisoned lock is usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    next: AtomicU32,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A connection to a ttrpc server. Clones share the connection; it closes
/// when the last clone drops.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Removes a call's entry if its future is dropped before the reply.
struct Unregister<'a> {
    shared: &'a Shared,
    stream: u32,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Some(map) = self.shared.lock().as_mut() {
            map.remove(&self.stream);
        }
    }
}

impl Client {
    /// Connects to the unix socket at `path` (a `unix://` prefix is allowed).
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be reached.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let path = path.as_ref();
        let path = path
            .to_str()
            .and_then(|s| s.strip_prefix("unix://"))
            .map_or(path, Path::new);
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Io {
                op: "connect",
                source,
            })?;
        Ok(Client::new(stream))
    }

    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> Client {
        let (mut read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            closed: watch::channel(false).0,
        });
        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            loop {
                match frame::read(&mut read).await {
                    Ok(Some(f)) if f.kind == TYPE_RESPONSE => {
                        let Ok(resp) = Response::decode(f.payload.as_slice()) else {
                            tracing::warn!(stream = f.stream, "malformed ttrpc response");
                            continue;
                        };
                        let tx = reader_shared
                            .lock()
                            .as_mut()
                            .and_then(|m| m.remove(&f.stream));
                        if let Some(tx) = tx {
                            // The caller may have gone; nothing to do then.
                            let _ = tx.send(resp);
                        }
                    }
                    Ok(Some(_)) | Err(Error::TooLarge(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            // Dropping the senders fails every waiting call with Closed.
            reader_shared.lock().take();
            reader_shared.closed.send_replace(true);
        });
        Client {
            inner: Arc::new(Inner {
                writer: tokio::sync::Mutex::new(write),
                next: AtomicU32::new(1),
                shared,
                reader,
            }),
        }
    }

    /// Resolves once the connection is closed by the peer or broken.
    ///
    /// Cancel-safe.
    pub async fn closed(&self) {
        let mut rx = self.inner.shared.closed.subscribe();
        // An error means the sender is gone, which also means closed.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    /// Calls `service`/`method` with `req` and decodes the reply.
    ///
    /// Cancel-safe: a dropped call forgets its stream; the server may still
    /// run it.
    ///
    /// # Errors
    /// [`Error::Status`] with the server's status, [`Error::Closed`] when the
    /// connection ends first, [`Error::Timeout`] after `timeout`.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        metadata: Vec<KeyValue>,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let stream = self.inner.next.fetch_add(2, Ordering::Relaxed);
        let request = Request {
            service: service.to_owned(),
            method: method.to_owned(),
            payload: req.encode_to_vec(),
            timeout_nano: timeout.map_or(0, |t| t.as_nanos().min(i64::MAX as u128) as i64),
            metadata,
        };
        let buf = frame::encode(stream, TYPE_REQUEST, &request.encode_to_vec());
        if buf.len() - frame::HEADER_LEN > frame::MAX_MESSAGE {
            return Err(Error::TooLarge(buf.len() - frame::HEADER_LEN));
        }
        let (tx, rx) = oneshot::channel();
        match self.inner.shared.lock().as_mut() {
            Some(map) => map.insert(stream, tx),
            None => return Err(Error::Closed),
        };
        let _unregister = Unregister {
            shared: &self.inner.shared,
            stream,
        };
        let exchange = async {
            frame::write(&mut *self.inner.writer.lock().await, &buf).await?;
            rx.await.map_err(|_| Error::Closed)
        };
        let resp = match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| Error::Timeout)??,
            None => exchange.await?,
        };
        if let Some(status) = resp.status.filter(|s| s.code != 0) {
            return Err(Error::Status(status));
        }
        Resp::decode(resp.payload.as_slice()).map_err(Error::Decode)
    }
}
