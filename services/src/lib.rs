//! hulld: containerd's API served from one process.
//!
//! Layout:
//! - [`metadata`]: the sled metadata DB. It exposes typed, namespaced stores
//!   (namespaces, content, images, leases, containers) and garbage
//!   collection; sled trees never leave it.
//! - [`content`]: the local content store (blobs and resumable ingests),
//!   which knows nothing of namespaces, leases or GC.
//! - [`api`]: one module per gRPC service; handlers call only the metadata
//!   stores and the event exchange.
//! - [`tasks`]: the shim manager: one shim process per task, reached over
//!   ttrpc, found again after a restart, cleaned up after when it dies.
//! - [`events`]: the in-process event exchange; shims forward theirs over
//!   hulld's ttrpc socket ([`api::ttrpc_events`]).
//! - [`distribution`]: pull from and push to registries.
//! - [`filters`]: containerd's list filter syntax.
//! - [`listener`]: the connections hulld accepts on its socket.
//! - [`config`] and [`wiring`]: the TOML config and the plain code that
//!   builds and serves everything.
//!
//! `anyhow` appears only in the `hulld` binary.

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod content;
pub mod cri;
pub mod diff;
pub mod distribution;
pub mod events;
pub mod filters;
pub mod listener;
pub mod metadata;
pub mod restart;
pub mod snapshots;
pub mod tasks;
pub mod wiring;

/// hulld's version, reported by the version service.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs blocking filesystem or DB work off the async runtime.
///
/// A panic in `f` becomes an error of kind Unknown rather than tearing down
/// the caller.
pub(crate) async fn blocking<T, E, F>(f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<JoinError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(err) => Err(E::from(JoinError(err.to_string()))),
    }
}

/// A blocking task panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct JoinError(String);

impl hull_proto::errdefs::Classify for JoinError {
    fn kind(&self) -> hull_proto::errdefs::Kind {
        hull_proto::errdefs::Kind::Unknown
    }
}

/// Whether `e` says the disk is full (or the quota reached).
pub(crate) fn out_of_space(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.raw_os_error()
            .is_some_and(|n| n == Errno::ENOSPC as i32 || n == Errno::EDQUOT as i32)
}

/// Wall-clock time as nanoseconds since the Unix epoch, the form records keep.
pub(crate) fn now_nanos() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// Converts record time to the protobuf timestamp.
pub(crate) fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}
