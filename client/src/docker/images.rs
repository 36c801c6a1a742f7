//! `images`, `history`, `rmi`, and writing small documents (configs,
//! manifests) into the content store.

use std::collections::BTreeMap;
use std::time::SystemTime;

use hull_proto::containerd::services::content::v1::{WriteAction, WriteContentRequest};
use hull_proto::containerd::services::images::v1::{DeleteImageRequest, ListImagesRequest};
use sha2::{Digest, Sha256};
use tonic::Status;

use super::image::LocalImage;
use super::Docker;
use crate::Error;

/// One row of `images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// REPOSITORY (familiar form: `busybox`, `127.0.0.1:5000/app`).
    pub repository: String,
    /// TAG (`<none>` for a digest-only name).
    pub tag: String,
    /// The config digest (IMAGE ID).
    pub id: String,
    /// When the image was built.
    pub created: Option<SystemTime>,
    /// Bytes of its layers and config, as stored.
    pub size: u64,
    /// The record's name.
    pub name: String,
}

/// One row of `history`, newest first.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The layer's diff ID, or `<missing>` for an empty step.
    pub layer: String,
    /// When the step ran.
    pub created: Option<SystemTime>,
    /// What it ran.
    pub created_by: String,
    /// Bytes it added.
    pub size: u64,
    /// Its comment.
    pub comment: String,
}

/// Splits a record name into Docker's REPOSITORY and TAG.
pub fn repo_tag(name: &str) -> (String, String) {
    let familiar = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    if familiar.contains('@') {
        let repo = familiar.split('@').next().unwrap_or(familiar);
        return (repo.to_owned(), "<none>".into());
    }
    // A tag is after the last ':' that follows the last '/'.
    let slash = familiar.rfind('/').map_or(0, |i| i + 1);
    match familiar[slash..].rfind(':') {
        Some(i) => (
            familiar[..slash + i].to_owned(),
            familiar[slash + i + 1..].to_owned(),
        ),
        None => (familiar.to_owned(), "<none>".into()),
    }
}

fn created_of(img: &LocalImage) -> Option<SystemTime> {
    img.config
        .created()
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

impl Docker {
    /// Every image that resolves for this machine.
    ///
    /// # Errors
    /// When the daemon cannot be asked.
    pub async fn images(&self) -> Result<Vec<(ImageSummary, LocalImage)>, Error> {
        let records = self
            .client
            .images()
            .list(ListImagesRequest::default())
            .await?
            .into_inner()
            .images;
        let mut out = Vec::new();
        for r in records {
            let Ok(img) = self.resolve_record(r).await else {
                continue;
            };
            let (repository, tag) = repo_tag(&img.name);
            let size = img.manifest.config().size()
                + img.manifest.layers().iter().map(|l| l.size()).sum::<u64>();
            out.push((
                ImageSummary {
                    repository,
                    tag,
                    id: img.config_digest.clone(),
                    created: created_of(&img),
                    size,
                    name: img.name.clone(),
                },
                img,
            ));
        }
        out.sort_by_key(|(s, _)| std::cmp::Reverse(s.created));
        Ok(out)
    }

    /// The history of image `reference`, newest step first.
    ///
    /// # Errors
    /// NotFound.
    pub async fn history(&self, reference: &str) -> Result<Vec<HistoryEntry>, Error> {
        let img = self.image(reference).await?;
        let diff_ids = img.config.rootfs().diff_ids().clone();
        let layers = img.manifest.layers().clone();
        let history = img.config.history().clone().unwrap_or_default();
        let mut out = Vec::new();
        let mut layer = 0usize;
        for h in &history {
            let empty = h.empty_layer().unwrap_or(false);
            let (id, size) = if empty {
                ("<missing>".to_owned(), 0)
            } else {
                let id = diff_ids
                    .get(layer)
                    .cloned()
                    .unwrap_or_else(|| "<missing>".into());
                let size = layers.get(layer).map_or(0, |l| l.size());
                layer += 1;
                (id, size)
            };
            out.push(HistoryEntry {
                layer: id,
                created: h
                    .created()
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
                created_by: h.created_by().clone().unwrap_or_default(),
                size,
                comment: h.comment().clone().unwrap_or_default(),
            });
        }
        // Layers the history does not describe (images built without one).
        for (i, d) in diff_ids.iter().enumerate().skip(layer) {
            out.push(HistoryEntry {
                layer: d.clone(),
                created: None,
                created_by: String::new(),
                size: layers.get(i).map_or(0, |l| l.size()),
                comment: String::new(),
            });
        }
        out.reverse();
        Ok(out)
    }

    /// Removes image `reference` (its name; the content goes at the next
    /// garbage collection once nothing else holds it).
    ///
    /// # Errors
    /// NotFound; FailedPrecondition while a container uses it, unless
    /// `force`.
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<String, Error> {
        let img = self.image(reference).await?;
        if !force {
            if let Some(c) = self
                .all_containers()
                .await?
                .into_iter()
                .find(|c| c.image == img.name)
            {
                return Err(Error::Status(Status::failed_precondition(format!(
                    "conflict: unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image {}",
                    &c.id[..12.min(c.id.len())],
                    short(&img.config_digest)
                ))));
            }
        }
        self.client
            .images()
            .delete(DeleteImageRequest {
                name: img.name.clone(),
                sync: true,
            })
            .await?;
        Ok(img.name)
    }

    /// Writes `data` as a blob with `labels`; returns its digest.
    pub(crate) async fn write_blob(
        &self,
        client: &crate::Client,
        data: Vec<u8>,
        labels: BTreeMap<String, String>,
    ) -> Result<String, Error> {
        let digest = format!("sha256:{}", hex(&Sha256::digest(&data)));
        let req = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: format!("hull-doc-{digest}"),
            total: data.len() as i64,
            expected: digest.clone(),
            offset: 0,
            data,
            labels,
        };
        let stream = tokio_stream::iter(vec![req]);
        match client.content().write(stream).await {
            Ok(mut resp) => {
                let mut inner = resp.get_mut().message().await;
                if let Err(s) = &inner {
                    if crate::from_status(s) == hull_proto::errdefs::Kind::AlreadyExists {
                        inner = Ok(None);
                    }
                }
                inner?;
            }
            Err(s) if crate::from_status(&s) == hull_proto::errdefs::Kind::AlreadyExists => {}
            Err(s) => return Err(s.into()),
        }
        Ok(digest)
    }
}

/// A 12-hex image or container id.
pub fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex[..hex.len().min(12)].to_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Docker's sizes: "4.26MB", "1.2kB", "0B" (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        let digits = if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        };
        let digits = digits
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned();
        format!("{digits}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_as_docker_shows_them() {
        assert_eq!(
            repo_tag("docker.io/library/busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            repo_tag("127.0.0.1:5000/app:1"),
            ("127.0.0.1:5000/app".into(), "1".into())
        );
        assert_eq!(
            repo_tag("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app".into(), "<none>".into())
        );
        assert_eq!(
            repo_tag("docker.io/hull/x@sha256:ab"),
            ("hull/x".into(), "<none>".into())
        );
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_200), "1.2kB");
        assert_eq!(human_size(123_456_789), "123MB");
    }
}
