//! Images: a name pointing at a root descriptor.

use std::collections::BTreeMap;

use hull_proto::identifiers::Namespace;
use hull_proto::labels;

use super::schema::{key, kinds, prefix, DescriptorRecord, ImageRecord};
use super::{update_labels, Descriptor, MetaDb, MetadataError, Result};
use crate::filters::{label_field, Adaptor, Filter};

/// An image record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Name, usually a reference such as `docker.io/library/busybox:latest`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Root descriptor (index or manifest).
    pub target: Descriptor,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Last update, nanoseconds since the epoch.
    pub updated_at: i64,
}

/// The fields of an image update; what is used depends on the field mask.
#[derive(Debug, Clone, Default)]
pub struct ImagePatch {
    /// Which image.
    pub name: String,
    /// New labels.
    pub labels: BTreeMap<String, String>,
    /// New target, when the request carried a valid one.
    pub target: Option<Descriptor>,
    /// New target annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" => Some(self.name.clone()),
            "labels" => label_field(&self.labels, &path[1..]),
            "target" => match path.get(1).map(String::as_str)? {
                "digest" => Some(self.target.digest.to_string()),
                "mediatype" => Some(self.target.media_type.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}

fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(MetadataError::Missing("image name"));
    }
    labels::validate_all(&image.labels)?;
    if image.target.size <= 0 {
        return Err(MetadataError::NotPositive("Target.Size"));
    }
    if image.target.media_type.is_empty() {
        return Err(MetadataError::Missing("Target.MediaType"));
    }
    Ok(())
}

fn to_record(image: &Image) -> ImageRecord {
    ImageRecord {
        labels: image.labels.clone(),
        target: Some(DescriptorRecord {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.to_string(),
            size: image.target.size,
            annotations: image.target.annotations.clone(),
        }),
        created_at: image.created_at,
        updated_at: image.updated_at,
    }
}

fn from_record(name: String, rec: ImageRecord) -> Result<Image> {
    let t = rec.target.unwrap_or_default();
    Ok(Image {
        target: Descriptor {
            media_type: t.media_type,
            digest: t.digest.parse().map_err(|_| MetadataError::Corrupt {
                key: format!("image {name}"),
            })?,
            size: t.size,
            annotations: t.annotations,
        },
        name,
        labels: rec.labels,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    })
}

fn image_key(ns: &Namespace, name: &str) -> Vec<u8> {
    key(&["o", ns.as_str(), kinds::IMAGE, name])
}

fn not_found(name: &str) -> MetadataError {
    MetadataError::NotFound {
        what: "image",
        id: name.to_owned(),
    }
}

impl MetaDb {
    /// Reads an image.
    ///
    /// # Errors
    /// NotFound.
    pub fn get_image(&self, ns: &Namespace, name: &str) -> Result<Image> {
        let rec = self
            .get(&image_key(ns, name))?
            .ok_or_else(|| not_found(name))?;
        from_record(name.to_owned(), rec)
    }

    /// Images matching `filter`, by name.
    ///
    /// Served from memory: the first list in a namespace loads its images,
    /// and every image change updates the copy under the writer lock.
    ///
    /// # Errors
    /// Unknown when the DB fails.
    pub fn list_images(&self, ns: &Namespace, filter: &Filter) -> Result<Vec<Image>> {
        let pick = |all: &BTreeMap<String, Image>| {
            all.values()
                .filter(|i| filter.matches(*i))
                .cloned()
                .collect()
        };
        if let Some(all) = self
            .image_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns.as_str())
        {
            return Ok(pick(all));
        }
        // Load under the writer lock so that no change slips in between.
        let _w = self.lock();
        let mut all = BTreeMap::new();
        for (name, rec) in self.scan(&prefix(&["o", ns.as_str(), kinds::IMAGE]))? {
            let image = from_record(name.clone(), rec)?;
            all.insert(name, image);
        }
        let out = pick(&all);
        self.image_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string(), all);
        Ok(out)
    }

    /// Applies a committed image change to the in-memory copy, if the
    /// namespace has one. Called with the writer lock held.
    fn cache_image(&self, ns: &Namespace, name: &str, image: Option<&Image>) {
        let mut cache = self.image_cache.write().unwrap_or_else(|p| p.into_inner());
        if let Some(all) = cache.get_mut(ns.as_str()) {
            match image {
                Some(i) => all.insert(name.to_owned(), i.clone()),
                None => all.remove(name),
            };
        }
    }

    /// Creates an image; times are set here.
    ///
    /// # Errors
    /// AlreadyExists; InvalidArgument for a bad name, labels or target.
    pub fn create_image(&self, ns: &Namespace, mut image: Image) -> Result<Image> {
        validate(&image)?;
        image.created_at = crate::now_nanos();
        image.updated_at = image.created_at;
        self.update_then(
            |txn| {
                let k = image_key(ns, &image.name);
                if txn.contains(&k)? {
                    return Err(MetadataError::AlreadyExists {
                        what: "image",
                        id: image.name.clone(),
                    });
                }
                txn.ensure_namespace(ns)?;
                txn.put(k, &to_record(&image));
                Ok(image)
            },
            |i| self.cache_image(ns, &i.name, Some(i)),
        )
    }

    /// Updates an image by field mask: `labels`, `labels.<key>`, `target`,
    /// `annotations`, `annotations.<key>`; no mask replaces everything but
    /// the creation time.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for other paths, a missing target where one
    /// is needed, or an invalid result.
    pub fn update_image(
        &self,
        ns: &Namespace,
        patch: &ImagePatch,
        paths: &[String],
    ) -> Result<Image> {
        if patch.name.is_empty() {
            return Err(MetadataError::Missing("image name"));
        }
        let target = || patch.target.clone().ok_or(MetadataError::Missing("Target"));
        self.update_then(
            |txn| {
                let k = image_key(ns, &patch.name);
                let rec = txn.get(&k)?.ok_or_else(|| not_found(&patch.name))?;
                let mut updated = from_record(patch.name.clone(), rec)?;
                let created_at = updated.created_at;
                if paths.is_empty() {
                    updated.labels = patch.labels.clone();
                    updated.target = target()?;
                }
                for p in paths {
                    if update_labels(&mut updated.labels, &patch.labels, p) {
                        continue;
                    }
                    if let Some(a) = p.strip_prefix("annotations.") {
                        match patch.annotations.get(a) {
                            Some(v) => updated.target.annotations.insert(a.to_owned(), v.clone()),
                            None => updated.target.annotations.remove(a),
                        };
                        continue;
                    }
                    match p.as_str() {
                        "target" => updated.target = target()?,
                        "annotations" => updated.target.annotations = patch.annotations.clone(),
                        _ => {
                            return Err(MetadataError::Field {
                                what: "image",
                                field: p.clone(),
                                id: patch.name.clone(),
                            })
                        }
                    }
                }
                validate(&updated)?;
                updated.created_at = created_at;
                updated.updated_at = crate::now_nanos();
                txn.put(k, &to_record(&updated));
                Ok(updated)
            },
            |i| self.cache_image(ns, &i.name, Some(i)),
        )
    }

    /// Deletes an image; its content goes at the next GC unless referenced.
    ///
    /// # Errors
    /// NotFound.
    pub fn delete_image(&self, ns: &Namespace, name: &str) -> Result<()> {
        self.update_then(
            |txn| {
                let k = image_key(ns, name);
                if !txn.contains(&k)? {
                    return Err(not_found(name));
                }
                txn.remove(k);
                Ok(())
            },
            |()| self.cache_image(ns, name, None),
        )
    }
}
