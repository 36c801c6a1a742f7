//! `containerd.services.streaming.v1.Streaming`: streams a client opens
//! so that other calls (a transfer's progress, an archive's bytes, auth
//! callbacks) can refer to them by id.
//!
//! The first message names the stream (`StreamInit`) and is acknowledged
//! with an `Any` of `google.protobuf.Empty`; the stream is then registered
//! in its namespace until the client closes it or a call takes it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming as Inbound};

use hull_proto::containerd::services::streaming::v1::{streaming_server::Streaming, StreamInit};
use hull_proto::containerd::types::transfer::{Data, WindowUpdate};
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::Namespace;

use super::namespace;

/// Messages queued towards a client before its stream pushes back.
const OUTBOUND: usize = 64;

/// One registered stream: what the client sends, and a way to send to it.
#[derive(Debug)]
pub struct StreamEnds {
    /// Messages to the client.
    pub tx: mpsc::Sender<Result<Any, Status>>,
    /// Messages from the client, after its StreamInit.
    pub rx: tokio::sync::Mutex<mpsc::Receiver<Any>>,
}

impl StreamEnds {
    /// Sends `msg` to the client; false once it has gone.
    pub async fn send(&self, msg: Any) -> bool {
        self.tx.send(Ok(msg)).await.is_ok()
    }

    /// The client's next message; None once it closed its side.
    pub async fn recv(&self) -> Option<Any> {
        self.rx.lock().await.recv().await
    }
}

/// Streams open now, by namespace and id.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<HashMap<(String, String), Arc<StreamEnds>>>,
}

impl Streams {
    /// An empty registry.
    pub fn new() -> Arc<Streams> {
        Arc::new(Streams::default())
    }

    /// The stream `id` of `ns`.
    ///
    /// # Errors
    /// NotFound when no such stream is open.
    pub fn get(&self, ns: &Namespace, id: &str) -> Result<Arc<StreamEnds>, Status> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.as_str().to_owned(), id.to_owned()))
            .cloned()
            .ok_or_else(|| errdefs::status(Kind::NotFound, format!("stream {id:?}: not found")))
    }

    /// Takes stream `id` of `ns` for one call alone: once the call drops
    /// it, the client's stream ends (a data stream's end of file).
    ///
    /// # Errors
    /// NotFound when no such stream is open.
    pub fn take(&self, ns: &Namespace, id: &str) -> Result<Arc<StreamEnds>, Status> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.as_str().to_owned(), id.to_owned()))
            .ok_or_else(|| errdefs::status(Kind::NotFound, format!("stream {id:?}: not found")))
    }

    fn insert(&self, ns: &Namespace, id: &str, ends: Arc<StreamEnds>) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ns.as_str().to_owned(), id.to_owned());
        if open.contains_key(&key) {
            return false;
        }
        open.insert(key, ends);
        true
    }

    fn remove(&self, ns: &str, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.to_owned(), id.to_owned()));
    }
}

/// The type URL a message is named by, with or without a host prefix.
pub fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or("")
}

/// Serves [`Streams`].
#[derive(Debug)]
pub struct StreamingService {
    streams: Arc<Streams>,
}

impl StreamingService {
    /// Registers streams in `streams`.
    pub fn new(streams: Arc<Streams>) -> Self {
        StreamingService { streams }
    }
}

type AnyStream = Pin<Box<dyn Stream<Item = Result<Any, Status>> + Send>>;

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = AnyStream;

    async fn stream(
        &self,
        req: Request<Inbound<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ns = namespace(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            errdefs::status(Kind::InvalidArgument, "stream closed before its StreamInit")
        })?;
        if type_name(&first) != "containerd.services.streaming.v1.StreamInit" {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                format!("first message must be a StreamInit, not {}", first.type_url),
            ));
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| errdefs::status(Kind::InvalidArgument, format!("StreamInit: {e}")))?;
        if init.id.is_empty() {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                "stream id must not be empty",
            ));
        }
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND);
        let (in_tx, in_rx) = mpsc::channel(OUTBOUND);
        let ends = Arc::new(StreamEnds {
            tx: out_tx.clone(),
            rx: tokio::sync::Mutex::new(in_rx),
        });
        if !self.streams.insert(&ns, &init.id, ends) {
            return Err(errdefs::status(
                Kind::AlreadyExists,
                format!("stream {:?}: already exists", init.id),
            ));
        }
        let ack = Any {
            type_url: "google.protobuf.Empty".into(),
            value: Vec::new(),
        };
        let _ = out_tx.send(Ok(ack)).await;
        let (streams, ns_name, id) = (self.streams.clone(), ns.as_str().to_owned(), init.id);
        tokio::spawn(async move {
            while let Some(Ok(msg)) = inbound.next().await {
                if in_tx.send(msg).await.is_err() {
                    break;
                }
            }
            streams.remove(&ns_name, &id);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

/// Largest Data message a sender puts on a stream, and the window a
/// receiver grants at a time (containerd's numbers).
const MAX_DATA: usize = 32 << 10;
const WINDOW: i32 = 2 * MAX_DATA as i32;

/// The bytes a client sends on `ends` as Data messages, readable from a
/// blocking thread; window updates are granted as they are consumed.
pub fn receive_data(ends: Arc<StreamEnds>) -> ChannelReader {
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
    tokio::spawn(async move {
        let mut window: i32 = 0;
        loop {
            if window < WINDOW {
                let update = WindowUpdate { update: WINDOW };
                if !ends.send(hull_proto::typeurl::pack(&update)).await {
                    break;
                }
                window += WINDOW;
            }
            let Some(msg) = ends.recv().await else { break };
            if type_name(&msg) != "containerd.types.transfer.Data" {
                continue;
            }
            let Ok(data) = Data::decode(msg.value.as_slice()) else {
                break;
            };
            window -= i32::try_from(data.data.len()).unwrap_or(i32::MAX);
            if tx.send(bytes::Bytes::from(data.data)).await.is_err() {
                break;
            }
        }
    });
    ChannelReader {
        rx,
        current: bytes::Bytes::new(),
    }
}

/// A blocking reader over chunks from the async side; end of file when
/// the sender is gone.
pub struct ChannelReader {
    rx: mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Sends the chunks of `rx` to the client as Data messages, within the
/// windows it grants; the stream ends when `ends` is dropped after.
pub async fn send_data(ends: Arc<StreamEnds>, mut rx: mpsc::Receiver<bytes::Bytes>) {
    let credit = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let granted = Arc::new(tokio::sync::Notify::new());
    let listener = {
        let (ends, credit, granted) = (ends.clone(), credit.clone(), granted.clone());
        tokio::spawn(async move {
            while let Some(msg) = ends.recv().await {
                if type_name(&msg) == "containerd.types.transfer.WindowUpdate" {
                    if let Ok(w) = WindowUpdate::decode(msg.value.as_slice()) {
                        credit.fetch_add(i64::from(w.update), std::sync::atomic::Ordering::SeqCst);
                        granted.notify_one();
                    }
                }
            }
            // The client went away: let the sender stop waiting.
            credit.store(i64::MAX / 2, std::sync::atomic::Ordering::SeqCst);
            granted.notify_one();
        })
    };
    'chunks: while let Some(chunk) = rx.recv().await {
        let mut rest = chunk;
        while !rest.is_empty() {
            while credit.load(std::sync::atomic::Ordering::SeqCst) <= 0 {
                granted.notified().await;
            }
            let allowed =
                usize::try_from(credit.load(std::sync::atomic::Ordering::SeqCst)).unwrap_or(0);
            let n = rest.len().min(MAX_DATA).min(allowed.max(1));
            let piece = rest.split_to(n);
            let msg = Data {
                data: piece.to_vec(),
            };
            if !ends.send(hull_proto::typeurl::pack(&msg)).await {
                break 'chunks;
            }
            credit.fetch_sub(n as i64, std::sync::atomic::Ordering::SeqCst);
        }
    }
    listener.abort();
}
