//! Well-known label keys and containerd's label size rule.

use thiserror::Error;

use crate::errdefs::{Classify, Kind};

/// Marks an object as a garbage collection root.
pub const GC_ROOT: &str = "containerd.io/gc.root";
/// Prefix of labels whose value is a content digest the object refers to.
pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of labels whose value is a snapshot key; the suffix after the last
/// `.` names the snapshotter.
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
/// RFC 3339 time after which a lease no longer protects anything.
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
/// Flat leases keep resources but are not followed by GC references.
pub const GC_FLAT: &str = "containerd.io/gc.flat";
/// Diff ID of a layer blob.
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// Largest key plus value, in bytes.
pub const MAX_SIZE: usize = 4096;

/// A label broke containerd's size rule.
#[derive(Debug, Error)]
#[error("label key and value greater than maximum size ({MAX_SIZE} bytes), key: {key_prefix}")]
pub struct LabelError {
    /// The first characters of the key, enough to find it.
    pub key_prefix: String,
}

impl Classify for LabelError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// Checks one label.
///
/// # Errors
/// InvalidArgument when key and value together exceed [`MAX_SIZE`] bytes.
pub fn validate(key: &str, value: &str) -> Result<(), LabelError> {
    if key.len() + value.len() > MAX_SIZE {
        let key_prefix = key.chars().take(10).collect();
        return Err(LabelError { key_prefix });
    }
    Ok(())
}

/// Checks every label of a map.
///
/// # Errors
/// As [`validate`], for the first label that breaks the rule.
pub fn validate_all<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), LabelError> {
    labels.into_iter().try_for_each(|(k, v)| validate(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_counts_key_and_value() {
        assert!(validate("k", &"v".repeat(MAX_SIZE - 1)).is_ok());
        let err = validate("kk", &"v".repeat(MAX_SIZE - 1)).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument);
        assert!(err.to_string().contains("key: kk"));
    }
}
