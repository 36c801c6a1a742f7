//! Publishes task events to the daemon by ttrpc
//! (`containerd.services.events.ttrpc.v1.Events/Forward`).
//!
//! Events queue in order and are retried until the daemon takes them, so an
//! exit that happens while the daemon is down reaches it when it is back.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hull_proto::containerd::services::ttrpc::events::v1::{Envelope, ForwardRequest};
use hull_proto::headers;
use hull_ttrpc::frame::KeyValue;
use hull_ttrpc::Client;
use prost::Name;
use tokio::sync::{mpsc, oneshot};

/// Sends events to the daemon's ttrpc socket.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Item>,
}

#[derive(Debug)]
enum Item {
    Event(Envelope),
    /// Answered once everything queued before it is delivered.
    Flush(oneshot::Sender<()>),
}

/// The timestamp of `t`.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Publisher {
    /// Starts the forwarding task towards `address` (a unix socket path).
    pub fn start(address: PathBuf, namespace: String) -> Publisher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        tokio::spawn(async move {
            let mut client: Option<Client> = None;
            while let Some(item) = rx.recv().await {
                let envelope = match item {
                    Item::Event(e) => e,
                    Item::Flush(done) => {
                        let _ = done.send(());
                        continue;
                    }
                };
                let mut backoff = Duration::from_millis(50);
                let req = ForwardRequest {
                    envelope: Some(envelope),
                };
                loop {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = Client::connect(&address).await.ok();
                    }
                    if let Some(c) = &client {
                        let md = vec![KeyValue {
                            key: headers::NAMESPACE_TTRPC.to_owned(),
                            value: namespace.clone(),
                        }];
                        let sent = c
                            .call::<_, ()>(
                                "containerd.services.events.ttrpc.v1.Events",
                                "Forward",
                                &req,
                                md,
                                Some(Duration::from_secs(5)),
                            )
                            .await;
                        match sent {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::debug!(cause = %e, "forward event");
                                client = None;
                            }
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        });
        Publisher { tx }
    }

    /// Queues `event` under `topic` for the namespace the shim serves.
    pub fn publish<M: Name>(&self, namespace: &str, topic: &str, event: &M) {
        let envelope = Envelope {
            timestamp: Some(timestamp(SystemTime::now())),
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
            event: Some(hull_proto::typeurl::pack(event)),
        };
        // The forwarding task lives as long as the runtime; if it is gone
        // the shim is exiting and the event has nowhere to go.
        let _ = self.tx.send(Item::Event(envelope));
    }

    /// Waits until every event queued so far is delivered, or `limit`.
    pub async fn flush(&self, limit: Duration) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}
