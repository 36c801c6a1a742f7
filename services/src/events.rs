//! The in-process event exchange.
//!
//! Services publish after their change is committed; subscribers get every
//! envelope published after they subscribed. A subscriber that falls more
//! than [`BACKLOG`] events behind loses the oldest ones and is told how many
//! (containerd drops slow subscribers' events too).

use prost::Name;
use tokio::sync::broadcast;

use hull_proto::identifiers::Namespace;
use hull_proto::typeurl;

use crate::filters::Adaptor;

/// Events buffered per subscriber before the oldest are dropped.
pub const BACKLOG: usize = 4096;

/// One event with its routing fields.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// When it was published, nanoseconds since the epoch.
    pub timestamp: i64,
    /// Namespace it belongs to.
    pub namespace: String,
    /// Topic, e.g. `/images/create`.
    pub topic: String,
    /// The payload, type URL as containerd writes it.
    pub event: prost_types::Any,
}

impl Adaptor for Envelope {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "namespace" => Some(self.namespace.clone()),
            "topic" => Some(self.topic.clone()),
            _ => None,
        }
    }
}

/// Fan-out of events to subscribers.
#[derive(Debug, Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Envelope>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    /// An exchange with no subscribers.
    pub fn new() -> Exchange {
        let (tx, _) = broadcast::channel(BACKLOG);
        Exchange { tx }
    }

    /// Publishes a protobuf event under `topic` in `ns`.
    pub fn publish<M: Name>(&self, ns: &Namespace, topic: &str, event: &M) {
        self.forward(Envelope {
            timestamp: crate::now_nanos(),
            namespace: ns.to_string(),
            topic: topic.to_owned(),
            event: typeurl::pack(event),
        });
    }

    /// Sends an envelope as is.
    pub fn forward(&self, envelope: Envelope) {
        // An error only means nobody listens right now.
        let _ = self.tx.send(envelope);
    }

    /// A new subscription, starting now.
    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.tx.subscribe()
    }
}

/// Checks a topic the way containerd does: `/` separated, starting with `/`,
/// each component a valid identifier.
///
/// # Errors
/// InvalidArgument naming the problem.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(TopicError::NoLeadingSlash(topic.to_owned()));
    };
    if rest.is_empty() {
        return Err(TopicError::Empty);
    }
    for part in rest.split('/') {
        hull_proto::identifiers::validate(part).map_err(|source| TopicError::Component {
            topic: topic.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// A topic broke the rules.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Topics are absolute.
    #[error("must start with '/': topic {0:?}")]
    NoLeadingSlash(String),
    /// Just `/`.
    #[error("must not be empty: topic")]
    Empty,
    /// A component is not an identifier.
    #[error("invalid topic {topic:?}")]
    Component {
        /// The topic.
        topic: String,
        /// Why the component failed.
        #[source]
        source: hull_proto::identifiers::IdentifierError,
    },
}

impl hull_proto::errdefs::Classify for TopicError {
    fn kind(&self) -> hull_proto::errdefs::Kind {
        hull_proto::errdefs::Kind::InvalidArgument
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(validate_topic("/images/create").is_ok());
        assert!(validate_topic("images").is_err());
        assert!(validate_topic("/").is_err());
        assert!(validate_topic("/a//b").is_err());
    }

    #[tokio::test]
    async fn subscribers_see_events_after_subscribing() {
        let ex = Exchange::new();
        let ns = Namespace::new("default").unwrap();
        ex.publish(
            &ns,
            "/before",
            &hull_proto::containerd::events::ContentDelete::default(),
        );
        let mut rx = ex.subscribe();
        let ev = hull_proto::containerd::events::ContentDelete { digest: "d".into() };
        ex.publish(&ns, "/content/delete", &ev);
        let got = rx.recv().await.unwrap();
        assert_eq!(got.topic, "/content/delete");
        assert_eq!(got.event.type_url, "containerd.events.ContentDelete");
    }
}
