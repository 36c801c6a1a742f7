//! Snapshotters: layered root filesystems addressed by key.
//!
//! This crate holds the snapshot vocabulary shared by hulld and by external
//! snapshotter processes: [`Kind`] and the wire mapping of kinds. The
//! `Snapshotter` trait and the overlayfs and native implementations build on
//! it. It depends only on `hull-proto` and never on hull-services.

#![warn(missing_docs)]

use hull_proto::containerd::services::snapshots::v1 as api;

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only snapshot of a parent, never committed.
    View,
    /// A writable snapshot that can be committed.
    Active,
    /// A read-only snapshot that can be a parent.
    Committed,
}

impl From<Kind> for api::Kind {
    fn from(kind: Kind) -> api::Kind {
        match kind {
            Kind::View => api::Kind::View,
            Kind::Active => api::Kind::Active,
            Kind::Committed => api::Kind::Committed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_containerd_wire_numbers() {
        assert_eq!(api::Kind::from(Kind::View) as i32, 1);
        assert_eq!(api::Kind::from(Kind::Active) as i32, 2);
        assert_eq!(api::Kind::from(Kind::Committed) as i32, 3);
    }
}
