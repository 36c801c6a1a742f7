//! `containerd.services.events.v1.Events`.

use std::pin::Pin;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use hull_proto::containerd::services::events::v1::{
    events_server::Events, Envelope as Proto, ForwardRequest, PublishRequest, SubscribeRequest,
};
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::Namespace;

use super::{namespace, status};
use crate::events::{validate_topic, Envelope, Exchange};
use crate::filters::Filter;

/// Publish, forward and subscribe over the exchange.
#[derive(Debug)]
pub struct EventsService {
    events: Exchange,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl EventsService {
    /// Serves `events`; subscriptions end with `shutdown`.
    pub fn new(events: Exchange, shutdown: CancellationToken, tasks: TaskTracker) -> Self {
        EventsService {
            events,
            shutdown,
            tasks,
        }
    }
}

fn to_proto(e: Envelope) -> Proto {
    Proto {
        timestamp: Some(crate::timestamp(e.timestamp)),
        namespace: e.namespace,
        topic: e.topic,
        event: Some(e.event),
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        validate_topic(&req.topic).map_err(status)?;
        let event = req
            .event
            .ok_or_else(|| errdefs::status(Kind::InvalidArgument, "event must not be empty"))?;
        self.events.forward(Envelope {
            timestamp: crate::now_nanos(),
            namespace: ns.to_string(),
            topic: req.topic,
            event,
        });
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| errdefs::status(Kind::InvalidArgument, "envelope must not be empty"))?;
        Namespace::new(env.namespace.as_str()).map_err(status)?;
        validate_topic(&env.topic).map_err(status)?;
        let event = env
            .event
            .ok_or_else(|| errdefs::status(Kind::InvalidArgument, "event must not be empty"))?;
        let timestamp = env
            .timestamp
            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
            .unwrap_or_else(crate::now_nanos);
        self.events.forward(Envelope {
            timestamp,
            namespace: env.namespace,
            topic: env.topic,
            event,
        });
        Ok(Response::new(()))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Proto, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let mut rx = self.events.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                let env = tokio::select! {
                    env = rx.recv() => env,
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                };
                match env {
                    Ok(env) if filter.matches(&env) => {
                        if tx.send(Ok(to_proto(env))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(dropped = n, "slow event subscriber")
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
