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
