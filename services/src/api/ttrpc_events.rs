//! `containerd.services.events.ttrpc.v1.Events` on hulld's ttrpc socket:
//! where shims forward their task events.

use std::sync::Arc;

use hull_proto::containerd::services::ttrpc::events::v1::ForwardRequest;
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::Namespace;
use hull_ttrpc::server::{unary, unimplemented, BoxFuture};
use hull_ttrpc::{Context, Service, Status};

use crate::events::{validate_topic, Envelope, Exchange};

/// Republishes forwarded events on the exchange.
#[derive(Debug)]
pub struct TtrpcEvents {
    events: Exchange,
}

impl TtrpcEvents {
    /// Forwards into `events`.
    pub fn new(events: Exchange) -> Arc<Self> {
        Arc::new(TtrpcEvents { events })
    }

    fn forward(&self, req: ForwardRequest) -> Result<(), Status> {
        let invalid = |m: String| Status {
            code: Kind::InvalidArgument.code() as i32,
            message: m,
            details: Vec::new(),
        };
        let env = req
            .envelope
            .ok_or_else(|| invalid("envelope must be set".into()))?;
        let ns = Namespace::new(&env.namespace).map_err(|e| invalid(errdefs::message(&e)))?;
        validate_topic(&env.topic).map_err(|e| invalid(errdefs::message(&e)))?;
        let event = env
            .event
            .ok_or_else(|| invalid("event must be set".into()))?;
        let timestamp = env
            .timestamp
            .map(|t| {
                t.seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.nanos))
            })
            .unwrap_or_else(crate::now_nanos);
        tracing::debug!(namespace = %ns, topic = %env.topic, "event from shim");
        self.events.forward(Envelope {
            timestamp,
            namespace: ns.to_string(),
            topic: env.topic,
            event,
        });
        Ok(())
    }
}

impl Service for TtrpcEvents {
    fn name(&self) -> &'static str {
        "containerd.services.events.ttrpc.v1.Events"
    }

    fn call(
        self: Arc<Self>,
        _ctx: Context,
        method: String,
        payload: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, Status>> {
        Box::pin(async move {
            match method.as_str() {
                "Forward" => {
                    let this = self.clone();
                    unary(payload, |r| async move { this.forward(r) }).await
                }
                _ => Err(unimplemented(self.name(), &method)),
            }
        })
    }
}
