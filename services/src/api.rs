//! The gRPC services, one module each, and what they share: reading the
//! namespace and lease from request metadata, and turning errors into
//! statuses (the one place that logs them).

use std::error::Error;

use tonic::{Request, Status};

use hull_proto::digest::Digest;
use hull_proto::errdefs::{self, Classify, Kind};
use hull_proto::headers;
use hull_proto::identifiers::{LeaseId, Namespace};

pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod health;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod ttrpc_events;
pub mod version;

/// Largest message hulld accepts or sends, as containerd (16 MiB).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Converts an error to its status, logging it: server faults at error,
/// caller mistakes at debug.
pub(crate) fn status<E: Error + Classify + 'static>(err: E) -> Status {
    let st = errdefs::to_status(&err);
    if err.kind() == Kind::Unknown {
        tracing::error!(cause = %st.message(), "request failed");
    } else {
        tracing::debug!(code = ?st.code(), cause = %st.message(), "request refused");
    }
    st
}

/// The request's namespace.
///
/// # Errors
/// FailedPrecondition without one, as containerd; InvalidArgument for a
/// malformed one.
pub(crate) fn namespace<T>(req: &Request<T>) -> Result<Namespace, Status> {
    let Some(v) = req.metadata().get(headers::NAMESPACE) else {
        return Err(errdefs::status(
            Kind::FailedPrecondition,
            "namespace is required",
        ));
    };
    let v = v
        .to_str()
        .map_err(|_| errdefs::status(Kind::InvalidArgument, "namespace header is not text"))?;
    Namespace::new(v).map_err(|e| {
        let err = NamespaceHeaderError(e);
        errdefs::to_status(&err)
    })
}

#[derive(Debug, thiserror::Error)]
#[error("namespace validation")]
struct NamespaceHeaderError(#[source] hull_proto::identifiers::IdentifierError);

impl Classify for NamespaceHeaderError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// The lease the request's new objects belong to, if any.
///
/// # Errors
/// InvalidArgument for a malformed lease id.
pub(crate) fn lease<T>(req: &Request<T>) -> Result<Option<LeaseId>, Status> {
    let Some(v) = req.metadata().get(headers::LEASE) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| errdefs::status(Kind::InvalidArgument, "lease header is not text"))?;
    LeaseId::new(v).map(Some).map_err(status)
}

/// Parses a digest field.
///
/// # Errors
/// InvalidArgument naming the digest.
pub(crate) fn digest(s: &str) -> Result<Digest, Status> {
    s.parse().map_err(status)
}

/// Paths of an optional field mask.
pub(crate) fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

/// Runs metadata work on the blocking pool, mapping errors to statuses.
pub(crate) async fn run<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> crate::metadata::Result<T> + Send + 'static,
    T: Send + 'static,
{
    crate::blocking(f).await.map_err(status)
}

/// After a delete: collect garbage now when the client asked to wait for it
/// (`sync`), otherwise let the GC loop run soon.
pub(crate) async fn collect_after_delete(
    gc: &crate::metadata::gc::Collector,
    sync: bool,
) -> Result<(), Status> {
    if sync {
        gc.db()
            .gc_signal()
            .schedule_and_wait()
            .await
            .map_err(status)?;
    } else {
        gc.db().note_deletion();
    }
    Ok(())
}

/// Collections the list calls stream in, as containerd does.
pub(crate) const LIST_BATCH: usize = 100;
