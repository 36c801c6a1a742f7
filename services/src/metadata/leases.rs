//! Leases: named sets of resources that GC keeps while the lease lives.

use std::collections::BTreeMap;

use hull_proto::digest::Digest;
use hull_proto::identifiers::{LeaseId, Namespace};
use hull_proto::labels;

use super::schema::{key, kinds, prefix, split, LeaseRecord};
use super::{MetaDb, MetadataError, Result, Txn};
use crate::filters::{label_field, Adaptor, Filter};

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Id.
    pub id: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Labels, including `containerd.io/gc.expire`.
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" => Some(self.id.clone()),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

/// One resource held by a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    /// `content`, `ingests` or `snapshots/<snapshotter>`.
    pub kind: String,
    /// Digest, ingest ref or snapshot key.
    pub id: String,
}

/// Resource type of blobs.
pub const CONTENT: &str = "content";
/// Resource type of ingest refs.
pub const INGESTS: &str = "ingests";
/// Resource type prefix of snapshots.
pub const SNAPSHOTS: &str = "snapshots";

impl Resource {
    /// Checks and normalises a resource as containerd does.
    ///
    /// # Errors
    /// InvalidArgument for a malformed id or type; NotImplemented for an
    /// unknown type.
    pub fn parse(kind: &str, id: &str) -> Result<Resource> {
        let parts: Vec<&str> = kind.split('/').collect();
        let invalid = || MetadataError::Resource {
            kind: kind.to_owned(),
            id: id.to_owned(),
        };
        let id = match parts[0] {
            CONTENT if parts.len() == 1 => id.parse::<Digest>()?.to_string(),
            INGESTS if parts.len() == 1 => id.to_owned(),
            SNAPSHOTS if parts.len() == 2 && !parts[1].is_empty() => id.to_owned(),
            CONTENT | INGESTS | SNAPSHOTS => return Err(invalid()),
            _ => return Err(MetadataError::ResourceType(kind.to_owned())),
        };
        if id.is_empty() || id.contains('\0') {
            return Err(invalid());
        }
        Ok(Resource {
            kind: kind.to_owned(),
            id,
        })
    }
}

/// Parses `containerd.io/gc.expire`: RFC 3339, `Z` or numeric offset.
pub fn parse_expiry(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    let mut frac_nanos = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        let frac = &r[..digits];
        let padded: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        frac_nanos = padded.parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil date (Howard Hinnant's algorithm).
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000_000 + frac_nanos)
}

fn lease_key(ns: &Namespace, id: &str) -> Vec<u8> {
    key(&["o", ns.as_str(), kinds::LEASE, id])
}

fn not_found(id: &str) -> MetadataError {
    MetadataError::NotFound {
        what: "lease",
        id: id.to_owned(),
    }
}

impl Txn<'_> {
    /// Adds a resource to a lease that must exist.
    pub(crate) fn add_to_lease(
        &mut self,
        ns: &Namespace,
        lease: &LeaseId,
        res: &Resource,
    ) -> Result<()> {
        if !self.contains(&lease_key(ns, lease.as_str()))? {
            return Err(not_found(lease.as_str()));
        }
        self.put_raw(
            key(&[
                "o",
                ns.as_str(),
                kinds::LEASE_RESOURCE,
                lease.as_str(),
                &res.kind,
                &res.id,
            ]),
            Vec::new(),
        );
        Ok(())
    }

    /// Removes a lease and its resource entries.
    pub(crate) fn remove_lease(&mut self, ns: &Namespace, id: &str) -> Result<()> {
        for k in self.keys(&prefix(&["o", ns.as_str(), kinds::LEASE_RESOURCE, id]))? {
            self.remove(k);
        }
        self.remove(lease_key(ns, id));
        Ok(())
    }
}

impl MetaDb {
    /// Creates a lease; an empty id gets a generated one.
    ///
    /// # Errors
    /// AlreadyExists; InvalidArgument for a bad id or labels.
    pub fn create_lease(
        &self,
        ns: &Namespace,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease> {
        let id = if id.is_empty() {
            format!("{}-{}", crate::now_nanos(), super::random_suffix(8))
        } else {
            id.to_owned()
        };
        LeaseId::new(id.as_str())?;
        labels::validate_all(&labels)?;
        let lease = Lease {
            id,
            created_at: crate::now_nanos(),
            labels,
        };
        self.update(|txn| {
            let k = lease_key(ns, &lease.id);
            if txn.contains(&k)? {
                return Err(MetadataError::AlreadyExists {
                    what: "lease",
                    id: lease.id.clone(),
                });
            }
            txn.ensure_namespace(ns)?;
            txn.put(
                k,
                &LeaseRecord {
                    created_at: lease.created_at,
                    labels: lease.labels.clone(),
                },
            );
            Ok(lease)
        })
    }

    /// Deletes a lease; what it held goes at the next GC.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete_lease(&self, ns: &Namespace, id: &str) -> Result<()> {
        self.update(|txn| {
            if !txn.contains(&lease_key(ns, id))? {
                return Err(not_found(id));
            }
            txn.remove_lease(ns, id)
        })
    }

    /// Leases matching `filter`.
    ///
    /// # Errors
    /// Unknown when the DB fails.
    pub fn list_leases(&self, ns: &Namespace, filter: &Filter) -> Result<Vec<Lease>> {
        Ok(self
            .scan::<LeaseRecord>(&prefix(&["o", ns.as_str(), kinds::LEASE]))?
            .into_iter()
            .map(|(id, rec)| Lease {
                id,
                created_at: rec.created_at,
                labels: rec.labels,
            })
            .filter(|l| filter.matches(l))
            .collect())
    }

    /// Adds a resource to a lease.
    ///
    /// # Errors
    /// NotFound for an unknown lease; InvalidArgument or NotImplemented for
    /// a bad resource.
    pub fn add_lease_resource(&self, ns: &Namespace, id: &LeaseId, res: &Resource) -> Result<()> {
        self.update(|txn| txn.add_to_lease(ns, id, res))
    }

    /// Removes a resource from a lease (absent resources are not an error).
    ///
    /// # Errors
    /// NotFound for an unknown lease.
    pub fn delete_lease_resource(&self, ns: &Namespace, id: &str, res: &Resource) -> Result<()> {
        self.update(|txn| {
            if !txn.contains(&lease_key(ns, id))? {
                return Err(not_found(id));
            }
            txn.remove(key(&[
                "o",
                ns.as_str(),
                kinds::LEASE_RESOURCE,
                id,
                &res.kind,
                &res.id,
            ]));
            Ok(())
        })
    }

    /// What a lease holds.
    ///
    /// # Errors
    /// NotFound for an unknown lease.
    pub fn list_lease_resources(&self, ns: &Namespace, id: &str) -> Result<Vec<Resource>> {
        if self.get::<LeaseRecord>(&lease_key(ns, id))?.is_none() {
            return Err(not_found(id));
        }
        let p = prefix(&["o", ns.as_str(), kinds::LEASE_RESOURCE, id]);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&p).keys() {
            let k = item?;
            let tail = super::schema::tail(&k, p.len());
            if let [kind, rid] = split(&tail)[..] {
                out.push(Resource {
                    kind: kind.to_owned(),
                    id: rid.to_owned(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_parses_rfc3339() {
        assert_eq!(parse_expiry("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_expiry("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_expiry("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_expiry("2024-02-29T12:00:00Z"),
            Some(1_709_208_000 * 1_000_000_000)
        );
        assert_eq!(parse_expiry("tomorrow"), None);
    }

    #[test]
    fn resources_follow_containerd_rules() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(Resource::parse("content", d).is_ok());
        assert!(matches!(
            Resource::parse("content", "x"),
            Err(MetadataError::Digest(_))
        ));
        assert!(Resource::parse("ingests", "ref").is_ok());
        assert!(Resource::parse("snapshots/overlayfs", "k").is_ok());
        assert!(matches!(
            Resource::parse("snapshots", "k"),
            Err(MetadataError::Resource { .. })
        ));
        assert!(matches!(
            Resource::parse("widgets", "k"),
            Err(MetadataError::ResourceType(_))
        ));
    }
}
