//! Layout of the metadata DB.
//!
//! Everything lives in one sled tree, `hull`, so that a change to several
//! records is one atomic `apply_batch`. Keys are byte strings whose parts are
//! joined by NUL (no identifier, digest or image name contains NUL):
//!
//! ```text
//! meta  version                                 SCHEMA_VERSION, u32 big-endian
//! meta  uuid                                    server UUID, text
//! ns    <ns>                                    NamespaceRecord
//! o     <ns> image    <name>                    ImageRecord
//! o     <ns> blob     <digest>                  BlobRecord
//! o     <ns> lease    <id>                      LeaseRecord
//! o     <ns> leaseres <id> <type> <resource id> empty
//! o     <ns> container <id>                     ContainerRecord
//! ```
//!
//! Values are protobuf messages defined below: small, and new fields can be
//! added without a migration. Times are nanoseconds since the Unix epoch.
//! Ingests are not recorded here: the content store's ingest directories are
//! their only record, qualified by namespace in their ref.

use std::collections::BTreeMap;

/// Bumped whenever keys or record meanings change; each bump adds a
/// migration in `migrations.rs`.
pub const SCHEMA_VERSION: u32 = 1;

/// Name of the one sled tree.
pub const TREE: &str = "hull";

const SEP: u8 = 0;

/// Joins key parts with NUL.
pub fn key(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// Key prefix of every object of one type in a namespace, ending in NUL.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(SEP);
    k
}

/// The last part of a key, after `prefix`.
pub fn tail(key: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(&key[prefix_len..]).into_owned()
}

/// Splits a key tail on NUL.
pub fn split(tail: &str) -> Vec<&str> {
    tail.split('\0').collect()
}

/// Object types stored under `o <ns>`.
pub mod kinds {
    /// Images by name.
    pub const IMAGE: &str = "image";
    /// Blob records by digest.
    pub const BLOB: &str = "blob";
    /// Leases by id.
    pub const LEASE: &str = "lease";
    /// Lease resources by lease id, type and id.
    pub const LEASE_RESOURCE: &str = "leaseres";
    /// Containers by id.
    pub const CONTAINER: &str = "container";
}

/// A namespace.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceRecord {
    /// Labels.
    #[prost(btree_map = "string, string", tag = "1")]
    pub labels: BTreeMap<String, String>,
}

/// A namespace's view of one blob.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobRecord {
    /// Size in bytes.
    #[prost(int64, tag = "1")]
    pub size: i64,
    /// Creation time.
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    /// Last label change.
    #[prost(int64, tag = "3")]
    pub updated_at: i64,
    /// Labels, including GC references.
    #[prost(btree_map = "string, string", tag = "4")]
    pub labels: BTreeMap<String, String>,
}

/// An OCI descriptor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorRecord {
    /// Media type.
    #[prost(string, tag = "1")]
    pub media_type: String,
    /// Digest, validated.
    #[prost(string, tag = "2")]
    pub digest: String,
    /// Size in bytes.
    #[prost(int64, tag = "3")]
    pub size: i64,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "4")]
    pub annotations: BTreeMap<String, String>,
}

/// An image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageRecord {
    /// Labels.
    #[prost(btree_map = "string, string", tag = "1")]
    pub labels: BTreeMap<String, String>,
    /// Root descriptor.
    #[prost(message, optional, tag = "2")]
    pub target: Option<DescriptorRecord>,
    /// Creation time.
    #[prost(int64, tag = "3")]
    pub created_at: i64,
    /// Last update.
    #[prost(int64, tag = "4")]
    pub updated_at: i64,
}

/// A lease.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRecord {
    /// Creation time.
    #[prost(int64, tag = "1")]
    pub created_at: i64,
    /// Labels, including `containerd.io/gc.expire`.
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_with_nul_and_prefixes_end_in_nul() {
        assert_eq!(
            key(&["o", "default", "image", "a:b"]),
            b"o\0default\0image\0a:b"
        );
        let p = prefix(&["o", "default", "image"]);
        assert_eq!(p, b"o\0default\0image\0");
        assert_eq!(
            tail(&key(&["o", "default", "image", "x/y"]), p.len()),
            "x/y"
        );
        // A namespace that is a prefix of another must not see its objects.
        assert!(
            !key(&["o", "default2", "image", "x"]).starts_with(&prefix(&["o", "default", "image"]))
        );
    }
}

/// A container: what to run, not a running process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerRecord {
    /// Labels.
    #[prost(btree_map = "string, string", tag = "1")]
    pub labels: BTreeMap<String, String>,
    /// Image name it was made from (informational).
    #[prost(string, tag = "2")]
    pub image: String,
    /// Runtime name, e.g. `io.containerd.runc.v2`.
    #[prost(string, tag = "3")]
    pub runtime_name: String,
    /// Runtime options as the client sent them.
    #[prost(message, optional, tag = "4")]
    pub runtime_options: Option<prost_types::Any>,
    /// The OCI spec (an `Any` holding JSON).
    #[prost(message, optional, tag = "5")]
    pub spec: Option<prost_types::Any>,
    /// Snapshotter of its root filesystem.
    #[prost(string, tag = "6")]
    pub snapshotter: String,
    /// Key of its active snapshot.
    #[prost(string, tag = "7")]
    pub snapshot_key: String,
    /// Creation time.
    #[prost(int64, tag = "8")]
    pub created_at: i64,
    /// Last update.
    #[prost(int64, tag = "9")]
    pub updated_at: i64,
    /// Client extensions by name.
    #[prost(btree_map = "string, message", tag = "10")]
    pub extensions: BTreeMap<String, prost_types::Any>,
}
