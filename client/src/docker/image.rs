//! Local images as `run`, `images` and `commit` see them: a name, the
//! manifest for this machine's platform, its config and layer chain.

use hull_oci::media::{self, Kind};
use hull_oci::oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use hull_oci::platform::Matcher;
use hull_proto::containerd::services::content::v1::ReadContentRequest;
use hull_proto::containerd::services::images::v1::{GetImageRequest, Image, ListImagesRequest};
use hull_proto::errdefs::Kind as ErrKind;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Status;

use super::{invalid, Docker};
use crate::{Client, Error};

/// An image stored in the daemon, resolved for this machine.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The image record's name.
    pub name: String,
    /// The record.
    pub record: Image,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config's digest: Docker's image ID.
    pub config_digest: String,
    /// The config.
    pub config: ImageConfiguration,
    /// Chain ID of the top layer: the committed snapshot a container's
    /// root is prepared from.
    pub chain_id: String,
}

/// Normalises a reference as Docker does (`busybox` is
/// `docker.io/library/busybox:latest`); text that does not parse is kept.
pub fn normalize(reference: &str) -> String {
    hull_oci::reference::normalize(reference).unwrap_or_else(|_| reference.to_owned())
}

/// The chain ID of a layer stack: the first diff ID, then
/// `sha256(parent + " " + diff_id)` for each further layer.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut it = diff_ids.iter();
    let Some(first) = it.next() else {
        return String::new();
    };
    it.fold(first.clone(), |parent, d| {
        let h = Sha256::digest(format!("{parent} {d}").as_bytes());
        format!("sha256:{}", hex_lower(&h))
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a whole blob.
pub(crate) async fn read_blob(client: &Client, digest: &str) -> Result<Vec<u8>, Error> {
    let mut stream = client
        .content()
        .read(ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?.data);
    }
    Ok(out)
}

fn bad_doc(what: &str, digest: &str, e: impl std::fmt::Display) -> Error {
    Error::Status(Status::data_loss(format!("{what} {digest}: {e}")))
}

impl Docker {
    /// Looks up a local image by reference (normalised as Docker does),
    /// exact record name, or image-ID prefix.
    ///
    /// # Errors
    /// NotFound when there is none; DataLoss when its documents do not
    /// parse; NotFound when it has no manifest for this machine.
    pub async fn image(&self, reference: &str) -> Result<LocalImage, Error> {
        let record = self.image_record(reference).await?;
        self.resolve_record(record).await
    }

    async fn image_record(&self, reference: &str) -> Result<Image, Error> {
        let mut images = self.client.images();
        for name in [normalize(reference), reference.to_owned()] {
            match images.get(GetImageRequest { name }).await {
                Ok(r) => {
                    if let Some(img) = r.into_inner().image {
                        return Ok(img);
                    }
                }
                Err(s) if crate::from_status(&s) == ErrKind::NotFound => {}
                Err(s) => return Err(s.into()),
            }
        }
        // An image ID (config digest), possibly shortened.
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let all = images
                .list(ListImagesRequest::default())
                .await?
                .into_inner()
                .images;
            for img in all {
                if let Ok(local) = self.resolve_record(img.clone()).await {
                    if local
                        .config_digest
                        .trim_start_matches("sha256:")
                        .starts_with(hex)
                    {
                        return Ok(img);
                    }
                }
            }
        }
        Err(Error::Status(Status::not_found(format!(
            "No such image: {reference}"
        ))))
    }

    /// Resolves an image record to this machine's manifest and config.
    ///
    /// # Errors
    /// As [`Docker::image`].
    pub async fn resolve_record(&self, record: Image) -> Result<LocalImage, Error> {
        let target = record
            .target
            .clone()
            .ok_or_else(|| invalid(format!("image {} has no target", record.name)))?;
        let mut digest = target.digest.clone();
        let mut media_type = target.media_type.clone();
        // Walk down indexes to this platform's manifest.
        for _ in 0..4 {
            if media::classify(&media_type) != Kind::Index {
                break;
            }
            let data = read_blob(&self.client, &digest).await?;
            let index: ImageIndex =
                serde_json::from_slice(&data).map_err(|e| bad_doc("index", &digest, e))?;
            let matcher = Matcher::host();
            let best = index
                .manifests()
                .iter()
                .filter_map(|m| {
                    let rank = match m.platform() {
                        Some(p) => matcher.rank(p)?,
                        None => u32::MAX - 1,
                    };
                    Some((rank, m))
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, m)| m.clone())
                .ok_or_else(|| {
                    Error::Status(Status::not_found(format!(
                        "image {} has no manifest for this platform",
                        record.name
                    )))
                })?;
            digest = best.digest().to_string();
            media_type = best.media_type().to_string();
        }
        let data = read_blob(&self.client, &digest).await?;
        let manifest: ImageManifest =
            serde_json::from_slice(&data).map_err(|e| bad_doc("manifest", &digest, e))?;
        let config_digest = manifest.config().digest().to_string();
        let data = read_blob(&self.client, &config_digest).await?;
        let config: ImageConfiguration =
            serde_json::from_slice(&data).map_err(|e| bad_doc("config", &config_digest, e))?;
        let chain_id = chain_id(config.rootfs().diff_ids());
        Ok(LocalImage {
            name: record.name.clone(),
            record,
            manifest_digest: digest,
            manifest,
            config_digest,
            config,
            chain_id,
        })
    }
}
