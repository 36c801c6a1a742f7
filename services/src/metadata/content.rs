//! A namespace's view of the content store: blob records with labels, and
//! ingests whose refs are qualified by namespace.

use std::collections::BTreeMap;
use std::fs::File;

use hull_proto::digest::Digest;
use hull_proto::identifiers::{LeaseId, Namespace};
use hull_proto::labels;

use super::leases::{Resource, CONTENT, INGESTS};
use super::schema::{key, kinds, prefix, BlobRecord};
use super::{update_labels, MetaDb, MetadataError, Result};
use crate::content::{ContentError, ContentStore, ContentWriter, IngestStatus, Writer};
use crate::filters::{label_field, Adaptor, Filter};

/// A blob as one namespace sees it.
pub use crate::content::Info as BlobInfo;

impl Adaptor for BlobInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "digest" => Some(self.digest.to_string()),
            "size" => Some(self.size.to_string()),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "ref" => Some(self.ref_key.clone()),
            _ => None,
        }
    }
}

fn blob_key(ns: &Namespace, digest: &Digest) -> Vec<u8> {
    key(&["o", ns.as_str(), kinds::BLOB, &digest.to_string()])
}

fn not_found(digest: &Digest) -> MetadataError {
    MetadataError::Content(ContentError::BlobNotFound(digest.clone()))
}

/// The content store's ref for a namespace's ingest. Namespaces cannot
/// contain `/`, so the split back is unambiguous.
fn backend_ref(ns: &Namespace, r: &str) -> String {
    format!("{ns}/{r}")
}

fn strip_ref(ns: &Namespace, mut st: IngestStatus) -> IngestStatus {
    st.ref_key = st.ref_key.split_off(ns.as_str().len() + 1);
    st
}

fn to_info(digest: Digest, rec: BlobRecord) -> BlobInfo {
    BlobInfo {
        digest,
        size: rec.size,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        labels: rec.labels,
    }
}

impl MetaDb {
    /// Reads a blob record.
    ///
    /// # Errors
    /// NotFound when the namespace has no such blob.
    pub fn blob_info(&self, ns: &Namespace, digest: &Digest) -> Result<BlobInfo> {
        let rec = self
            .get(&blob_key(ns, digest))?
            .ok_or_else(|| not_found(digest))?;
        Ok(to_info(digest.clone(), rec))
    }

    /// Blobs of a namespace matching `filter`.
    ///
    /// # Errors
    /// Unknown when the DB fails.
    pub fn list_blobs(&self, ns: &Namespace, filter: &Filter) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for (d, rec) in self.scan::<BlobRecord>(&prefix(&["o", ns.as_str(), kinds::BLOB]))? {
            let info = to_info(d.parse()?, rec);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Updates a blob's labels (`labels`, `labels.<key>`; no mask replaces
    /// all labels).
    ///
    /// # Errors
    /// NotFound; InvalidArgument for other paths or bad labels.
    pub fn update_blob(
        &self,
        ns: &Namespace,
        digest: &Digest,
        new: &BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<BlobInfo> {
        self.update(|txn| {
            let k = blob_key(ns, digest);
            let mut rec: BlobRecord = txn.get(&k)?.ok_or_else(|| not_found(digest))?;
            if paths.is_empty() {
                rec.labels = new.clone();
            }
            for p in paths {
                if !update_labels(&mut rec.labels, new, p) {
                    return Err(MetadataError::Field {
                        what: "content",
                        field: p.clone(),
                        id: digest.to_string(),
                    });
                }
            }
            labels::validate_all(&rec.labels)?;
            rec.updated_at = crate::now_nanos();
            txn.put(k, &rec);
            Ok(to_info(digest.clone(), rec))
        })
    }

    /// Removes a namespace's record of a blob; the file goes at the next GC
    /// unless another namespace has it.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete_blob(&self, ns: &Namespace, digest: &Digest) -> Result<()> {
        self.update(|txn| {
            let k = blob_key(ns, digest);
            if !txn.contains(&k)? {
                return Err(not_found(digest));
            }
            txn.remove(k);
            self.mark_content_dirty();
            Ok(())
        })
    }

    /// Opens a blob the namespace has, with its size.
    ///
    /// # Errors
    /// NotFound.
    pub fn open_blob(&self, ns: &Namespace, digest: &Digest) -> Result<(File, i64)> {
        let info = self.blob_info(ns, digest)?;
        Ok((self.content.open_blob(digest)?, info.size))
    }

    /// Whether the namespace has blob `digest`; if so, it is added to
    /// `lease` in the same step, so that no collection can slip between the
    /// check and the hold.
    ///
    /// # Errors
    /// NotFound for an unknown lease.
    pub fn hold_existing_blob(
        &self,
        ns: &Namespace,
        digest: &Digest,
        lease: Option<&LeaseId>,
    ) -> Result<bool> {
        self.update(|txn| {
            if !txn.contains(&blob_key(ns, digest))? {
                return Ok(false);
            }
            if let Some(lease) = lease {
                let res = Resource {
                    kind: CONTENT.into(),
                    id: digest.to_string(),
                };
                txn.add_to_lease(ns, lease, &res)?;
            }
            Ok(true)
        })
    }

    /// Opens (or resumes) the writer for `r`, adding the ingest to `lease`;
    /// `expected` is recorded as the digest the client says it writes.
    ///
    /// # Errors
    /// Unavailable when another writer holds the ref; NotFound for an
    /// unknown lease.
    pub fn open_writer(
        &self,
        ns: &Namespace,
        r: &str,
        total: i64,
        expected: Option<&Digest>,
        lease: Option<&LeaseId>,
    ) -> Result<Writer> {
        if r.is_empty() {
            return Err(ContentError::EmptyRef.into());
        }
        if let Some(lease) = lease {
            let res = Resource {
                kind: INGESTS.into(),
                id: r.to_owned(),
            };
            self.update(|txn| txn.add_to_lease(ns, lease, &res))?;
        }
        Ok(self.content.writer(&backend_ref(ns, r), total, expected)?)
    }

    /// Verifies and commits what `writer` holds as a blob of `ns`.
    ///
    /// The data is fsynced and renamed into place before its record is
    /// committed; a crash in between leaves only an unreferenced file, which
    /// GC removes.
    ///
    /// # Errors
    /// FailedPrecondition on a size or digest mismatch (nothing is stored);
    /// AlreadyExists when the namespace has the blob already.
    pub fn commit(
        &self,
        ns: &Namespace,
        mut writer: Writer,
        size: i64,
        expected: Option<&Digest>,
        labels: BTreeMap<String, String>,
        lease: Option<&LeaseId>,
    ) -> Result<Digest> {
        labels::validate_all(&labels)?;
        let digest = writer.verify(size, expected)?;
        let ingest_ref = writer.status().ref_key.split_off(ns.as_str().len() + 1);
        let size = i64::try_from(writer.status().offset).unwrap_or(i64::MAX);
        *self.lock().committing.entry(digest.clone()).or_default() += 1;
        let published = writer.publish(&self.content, &digest);
        let existed = self.update(|txn| {
            if let Some(n) = txn.state.committing.get_mut(&digest) {
                *n -= 1;
                if *n == 0 {
                    txn.state.committing.remove(&digest);
                }
            }
            match published {
                Ok(()) | Err(ContentError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let k = blob_key(ns, &digest);
            // As containerd: a blob the namespace has already is still
            // added to the writer's lease before AlreadyExists is returned,
            // so that a client ignoring that error (ctr import does) holds it.
            let existed = txn.contains(&k)?;
            if !existed {
                let now = crate::now_nanos();
                txn.ensure_namespace(ns)?;
                txn.put(
                    k,
                    &BlobRecord {
                        size,
                        created_at: now,
                        updated_at: now,
                        labels,
                    },
                );
            }
            if let Some(lease) = lease {
                txn.add_to_lease(
                    ns,
                    lease,
                    &Resource {
                        kind: CONTENT.into(),
                        id: digest.to_string(),
                    },
                )?;
                txn.remove(key(&[
                    "o",
                    ns.as_str(),
                    kinds::LEASE_RESOURCE,
                    lease.as_str(),
                    INGESTS,
                    &ingest_ref,
                ]));
            }
            Ok(existed)
        });
        // A failed commit may have left the file in place without a
        // record: the next collection sweeps the blob files.
        if existed.is_err() {
            self.mark_content_dirty();
        }
        let existed = existed?;
        if existed {
            return Err(MetadataError::AlreadyExists {
                what: "content",
                id: digest.to_string(),
            });
        }
        Ok(digest)
    }

    /// Progress of one ingest of the namespace.
    ///
    /// # Errors
    /// NotFound.
    pub fn ingest_status(&self, ns: &Namespace, r: &str) -> Result<IngestStatus> {
        Ok(strip_ref(ns, self.content.status(&backend_ref(ns, r))?))
    }

    /// Ingests of the namespace matching `filter`.
    ///
    /// # Errors
    /// Unknown when the ingest directory cannot be read.
    pub fn list_ingests(&self, ns: &Namespace, filter: &Filter) -> Result<Vec<IngestStatus>> {
        Ok(self
            .content
            .list_statuses(&backend_ref(ns, ""))?
            .into_iter()
            .map(|s| strip_ref(ns, s))
            .filter(|s| filter.matches(s))
            .collect())
    }

    /// Drops an ingest and its data.
    ///
    /// # Errors
    /// NotFound.
    pub fn abort_ingest(&self, ns: &Namespace, r: &str) -> Result<()> {
        Ok(self.content.abort(&backend_ref(ns, r))?)
    }
}

/// One namespace's content over the metadata DB: the [`ContentStore`]
/// contract as the content service serves it, for callers inside hulld.
/// Every change is flushed before it returns, and deletions tell the GC
/// scheduler.
#[derive(Debug, Clone)]
pub struct NamespacedContent {
    db: std::sync::Arc<MetaDb>,
    ns: Namespace,
    lease: Option<LeaseId>,
}

impl NamespacedContent {
    /// Namespace `ns` of `db`, adding what it writes to `lease`.
    pub fn new(db: std::sync::Arc<MetaDb>, ns: Namespace, lease: Option<LeaseId>) -> Self {
        NamespacedContent { db, ns, lease }
    }

    /// The namespace it works in.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    async fn run<T, F>(&self, f: F) -> std::result::Result<T, ContentError>
    where
        F: FnOnce(&MetaDb, &Namespace) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (db, ns) = (self.db.clone(), self.ns.clone());
        crate::blocking(move || f(&db, &ns).map_err(ContentError::from)).await
    }

    async fn flush(&self) -> std::result::Result<(), ContentError> {
        self.db.flush().await.map_err(ContentError::from)
    }
}

fn filter(filters: &[String]) -> std::result::Result<Filter, ContentError> {
    Filter::parse(filters).map_err(|e| ContentError::from(MetadataError::from(e)))
}

#[tonic::async_trait]
impl ContentStore for NamespacedContent {
    async fn info(&self, digest: &Digest) -> std::result::Result<BlobInfo, ContentError> {
        let d = digest.clone();
        self.run(move |db, ns| db.blob_info(ns, &d)).await
    }

    async fn update(
        &self,
        info: BlobInfo,
        paths: Vec<String>,
    ) -> std::result::Result<BlobInfo, ContentError> {
        let updated = self
            .run(move |db, ns| db.update_blob(ns, &info.digest, &info.labels, &paths))
            .await?;
        self.flush().await?;
        Ok(updated)
    }

    async fn list(&self, filters: Vec<String>) -> std::result::Result<Vec<BlobInfo>, ContentError> {
        let f = filter(&filters)?;
        self.run(move |db, ns| db.list_blobs(ns, &f)).await
    }

    async fn delete(&self, digest: &Digest) -> std::result::Result<(), ContentError> {
        let d = digest.clone();
        self.run(move |db, ns| db.delete_blob(ns, &d)).await?;
        self.flush().await?;
        self.db.note_deletion();
        Ok(())
    }

    async fn read_at(
        &self,
        digest: &Digest,
        offset: u64,
        len: usize,
    ) -> std::result::Result<Vec<u8>, ContentError> {
        use std::io::{Read, Seek, SeekFrom};
        let d = digest.clone();
        self.run(move |db, ns| {
            let (mut file, _) = db.open_blob(ns, &d)?;
            let path = db.content_store().blob_path(&d);
            file.seek(SeekFrom::Start(offset))
                .map_err(|source| ContentError::Io {
                    op: "seek",
                    path: path.clone(),
                    source,
                })?;
            let mut out = Vec::new();
            file.take(len as u64)
                .read_to_end(&mut out)
                .map_err(|source| ContentError::Io {
                    op: "read",
                    path,
                    source,
                })?;
            Ok(out)
        })
        .await
    }

    async fn status(&self, r: &str) -> std::result::Result<IngestStatus, ContentError> {
        let r = r.to_owned();
        self.run(move |db, ns| db.ingest_status(ns, &r)).await
    }

    async fn list_statuses(
        &self,
        filters: Vec<String>,
    ) -> std::result::Result<Vec<IngestStatus>, ContentError> {
        let f = filter(&filters)?;
        self.run(move |db, ns| db.list_ingests(ns, &f)).await
    }

    async fn abort(&self, r: &str) -> std::result::Result<(), ContentError> {
        let r = r.to_owned();
        self.run(move |db, ns| db.abort_ingest(ns, &r)).await
    }

    async fn writer(
        &self,
        r: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> std::result::Result<Box<dyn ContentWriter>, ContentError> {
        let (r, lease) = (r.to_owned(), self.lease.clone());
        let writer = self
            .run(move |db, ns| {
                if let Some(d) = &expected {
                    if db.hold_existing_blob(ns, d, lease.as_ref())? {
                        return Err(MetadataError::AlreadyExists {
                            what: "content",
                            id: d.to_string(),
                        });
                    }
                }
                db.open_writer(ns, &r, total, expected.as_ref(), lease.as_ref())
            })
            .await?;
        // Adding the ingest to the lease changed the DB.
        if self.lease.is_some() {
            self.flush().await?;
        }
        Ok(Box::new(NamespacedWriter {
            store: self.clone(),
            writer: Some(writer),
        }))
    }
}

/// A writer of [`NamespacedContent`].
struct NamespacedWriter {
    store: NamespacedContent,
    writer: Option<Writer>,
}

impl NamespacedWriter {
    /// Runs `f` on the writer off the async threads.
    async fn with<T, F>(&mut self, f: F) -> std::result::Result<T, ContentError>
    where
        F: FnOnce(&mut Writer) -> std::result::Result<T, ContentError> + Send + 'static,
        T: Send + 'static,
    {
        let mut w = self.writer.take().ok_or(ContentError::Closed)?;
        let (w, out) = crate::blocking(move || {
            let out = f(&mut w);
            Ok::<_, ContentError>((w, out))
        })
        .await?;
        self.writer = Some(w);
        out
    }
}

#[tonic::async_trait]
impl ContentWriter for NamespacedWriter {
    async fn write(&mut self, data: Vec<u8>) -> std::result::Result<(), ContentError> {
        self.with(move |w| w.write(&data)).await
    }

    async fn digest(&mut self) -> std::result::Result<Digest, ContentError> {
        self.with(|w| Ok(w.digest())).await
    }

    async fn status(&mut self) -> std::result::Result<IngestStatus, ContentError> {
        let ns = self.store.ns.clone();
        self.with(move |w| Ok(strip_ref(&ns, w.status()))).await
    }

    async fn truncate(&mut self) -> std::result::Result<(), ContentError> {
        self.with(|w| w.truncate()).await
    }

    async fn commit(
        &mut self,
        size: i64,
        expected: Option<Digest>,
        labels: BTreeMap<String, String>,
    ) -> std::result::Result<Digest, ContentError> {
        let w = self.writer.take().ok_or(ContentError::Closed)?;
        let lease = self.store.lease.clone();
        let digest = self
            .store
            .run(move |db, ns| db.commit(ns, w, size, expected.as_ref(), labels, lease.as_ref()))
            .await?;
        self.store.flush().await?;
        Ok(digest)
    }

    async fn close(mut self: Box<Self>) -> std::result::Result<(), ContentError> {
        if let Some(w) = self.writer.take() {
            // Dropping records the ingest's times; do it off the async
            // threads.
            crate::blocking(move || {
                drop(w);
                Ok::<_, ContentError>(())
            })
            .await?;
        }
        Ok(())
    }
}
