//! `commit`: a container's changes become a new layer (through the diff
//! service), on top of its image's, with a new config and history entry;
//! the layer is unpacked at once so that the new image runs.

use std::collections::BTreeMap;

use hull_proto::containerd::services::diff::v1::{ApplyRequest, DiffRequest};
use hull_proto::containerd::services::images::v1::{CreateImageRequest, Image, UpdateImageRequest};
use hull_proto::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use hull_proto::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, ViewSnapshotRequest,
};
use hull_proto::containerd::services::tasks::v1::{PauseTaskRequest, ResumeTaskRequest};
use hull_proto::containerd::types::Descriptor;
use hull_proto::errdefs::Kind;
use serde_json::{json, Value};

use super::image::{chain_id, normalize, read_blob};
use super::list::command_of;
use super::{invalid, names, Docker};
use crate::{from_status, Error};

const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// What `commit` records.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's name (`repo[:tag]`); empty names it by its ID.
    pub reference: String,
    /// History comment (`-m`).
    pub message: String,
    /// Author (`-a`).
    pub author: String,
    /// Freeze the container meanwhile (Docker's default).
    pub pause: bool,
}

impl Docker {
    /// Commits container `key`; returns the new image's ID.
    ///
    /// # Errors
    /// NotFound; InvalidArgument for a bad name; the diff service's error.
    pub async fn commit(&self, key: &str, opts: &CommitOptions) -> Result<String, Error> {
        let c = self.find(key).await?;
        let image = self.image(&c.image).await?;
        let name = if opts.reference.is_empty() {
            String::new()
        } else {
            let n = normalize(&opts.reference);
            if hull_client_ref_ok(&n) {
                n
            } else {
                return Err(invalid(format!(
                    "invalid reference format: {}",
                    opts.reference
                )));
            }
        };
        let lease = format!("hull-commit-{}", &names::new_id()[..16]);
        self.client
            .leases()
            .create(CreateRequest {
                id: lease.clone(),
                labels: [(
                    "containerd.io/gc.expire".to_owned(),
                    humantime::format_rfc3339_seconds(
                        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
                    )
                    .to_string(),
                )]
                .into(),
            })
            .await?;
        let leased = self.client.with_lease(&lease);
        let paused = opts.pause
            && self
                .client
                .tasks()
                .pause(PauseTaskRequest {
                    container_id: c.id.clone(),
                })
                .await
                .is_ok();
        let result = self.commit_in(&leased, &c, &image, &name, opts).await;
        if paused {
            let _ = self
                .client
                .tasks()
                .resume(ResumeTaskRequest {
                    container_id: c.id.clone(),
                })
                .await;
        }
        let _ = self
            .client
            .leases()
            .delete(DeleteRequest {
                id: lease,
                sync: false,
            })
            .await;
        result
    }

    async fn commit_in(
        &self,
        leased: &crate::Client,
        c: &hull_proto::containerd::services::containers::v1::Container,
        image: &super::LocalImage,
        name: &str,
        opts: &CommitOptions,
    ) -> Result<String, Error> {
        let sn = c.snapshotter.clone();
        let tmp = names::new_id();
        // The image's root (lower) against the container's (upper).
        let view = format!("commit-view-{}", &tmp[..16]);
        let lower = leased
            .snapshots()
            .view(ViewSnapshotRequest {
                snapshotter: sn.clone(),
                key: view.clone(),
                parent: image.chain_id.clone(),
                labels: Default::default(),
            })
            .await?
            .into_inner()
            .mounts;
        let upper = self
            .client
            .snapshots()
            .mounts(MountsRequest {
                snapshotter: sn.clone(),
                key: c.snapshot_key.clone(),
            })
            .await?
            .into_inner()
            .mounts;
        let diffed = leased
            .diff()
            .diff(DiffRequest {
                left: lower,
                right: upper,
                media_type: LAYER_GZIP.into(),
                r#ref: format!("commit-{}", &tmp[..16]),
                labels: Default::default(),
            })
            .await;
        let _ = self
            .client
            .snapshots()
            .remove(RemoveSnapshotRequest {
                snapshotter: sn.clone(),
                key: view,
            })
            .await;
        let layer = diffed?
            .into_inner()
            .diff
            .ok_or_else(|| invalid("the diff service returned no layer"))?;

        // Unpack it on the image's chain, so that the new image runs.
        let apply_key = format!("commit-apply-{}", &tmp[..16]);
        let mounts = leased
            .snapshots()
            .prepare(PrepareSnapshotRequest {
                snapshotter: sn.clone(),
                key: apply_key.clone(),
                parent: image.chain_id.clone(),
                labels: Default::default(),
            })
            .await?
            .into_inner()
            .mounts;
        let applied = leased
            .diff()
            .apply(ApplyRequest {
                diff: Some(layer.clone()),
                mounts,
                payloads: Default::default(),
            })
            .await;
        let diff_id = match applied {
            Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
            Err(s) => {
                let _ = self
                    .client
                    .snapshots()
                    .remove(RemoveSnapshotRequest {
                        snapshotter: sn.clone(),
                        key: apply_key,
                    })
                    .await;
                return Err(s.into());
            }
        };
        let mut diff_ids = image.config.rootfs().diff_ids().clone();
        diff_ids.push(diff_id.clone());
        let top = chain_id(&diff_ids);
        let exists = self
            .client
            .snapshots()
            .stat(StatSnapshotRequest {
                snapshotter: sn.clone(),
                key: top.clone(),
            })
            .await
            .is_ok();
        if exists {
            let _ = self
                .client
                .snapshots()
                .remove(RemoveSnapshotRequest {
                    snapshotter: sn.clone(),
                    key: apply_key,
                })
                .await;
        } else {
            leased
                .snapshots()
                .commit(CommitSnapshotRequest {
                    snapshotter: sn.clone(),
                    name: top.clone(),
                    key: apply_key,
                    labels: Default::default(),
                })
                .await?;
        }

        // The config: the image's, with the layer, a history entry and
        // the container's command.
        let raw = read_blob(&self.client, &image.config_digest).await?;
        let mut config: Value =
            serde_json::from_slice(&raw).map_err(|e| invalid(format!("image config: {e}")))?;
        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        config["created"] = json!(now);
        if !opts.author.is_empty() {
            config["author"] = json!(opts.author);
        }
        config["rootfs"]["diff_ids"] = json!(diff_ids);
        let args = command_of(c);
        let entrypoint: Vec<String> =
            serde_json::from_value(config["config"]["Entrypoint"].clone()).unwrap_or_default();
        if !args.is_empty() {
            let cmd: Vec<String> = if args.starts_with(&entrypoint) {
                args[entrypoint.len()..].to_vec()
            } else {
                config["config"]["Entrypoint"] = Value::Null;
                args.clone()
            };
            config["config"]["Cmd"] = json!(cmd);
        }
        let mut entry = json!({ "created": now, "created_by": args.join(" ") });
        if !opts.message.is_empty() {
            entry["comment"] = json!(opts.message);
        }
        if !opts.author.is_empty() {
            entry["author"] = json!(opts.author);
        }
        let mut history: Vec<Value> = config["history"].as_array().cloned().unwrap_or_default();
        // Layers the image's history does not describe get an entry each
        // first, so that the new entry lines up with the new layer.
        let described = history
            .iter()
            .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
            .count();
        let old_layers = diff_ids.len() - 1;
        for _ in described..old_layers {
            history.insert(0, json!({ "created_by": "" }));
        }
        history.push(entry);
        config["history"] = json!(history);
        let config_bytes = serde_json::to_vec(&config).map_err(|e| invalid(e.to_string()))?;
        let config_size = config_bytes.len() as i64;
        let mut config_labels = BTreeMap::new();
        config_labels.insert(format!("containerd.io/gc.ref.snapshot.{sn}"), top.clone());
        let config_digest = self.write_blob(leased, config_bytes, config_labels).await?;

        let mut layers: Vec<Value> = image
            .manifest
            .layers()
            .iter()
            .map(|l| json!({ "mediaType": l.media_type().to_string(), "digest": l.digest().to_string(), "size": l.size() }))
            .collect();
        layers.push(
            json!({ "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size }),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": { "mediaType": CONFIG, "digest": config_digest, "size": config_size },
            "layers": layers,
        });
        let mut manifest_labels = BTreeMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_owned(),
            config_digest.clone(),
        );
        for (i, l) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l["digest"].as_str().unwrap_or_default().to_owned(),
            );
        }
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
        let manifest_size = manifest_bytes.len() as i64;
        let manifest_digest = self
            .write_blob(leased, manifest_bytes, manifest_labels)
            .await?;

        let name = if name.is_empty() {
            config_digest.clone()
        } else {
            name.to_owned()
        };
        let record = Image {
            name: name.clone(),
            target: Some(Descriptor {
                media_type: MANIFEST.into(),
                digest: manifest_digest,
                size: manifest_size,
                annotations: Default::default(),
            }),
            ..Default::default()
        };
        match self
            .client
            .images()
            .create(CreateImageRequest {
                image: Some(record.clone()),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if from_status(&s) == Kind::AlreadyExists => {
                self.client
                    .images()
                    .update(UpdateImageRequest {
                        image: Some(record),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["target".into()],
                        }),
                    })
                    .await?;
            }
            Err(s) => return Err(s.into()),
        }
        Ok(config_digest)
    }
}

/// Whether `name` (normalised) is a reference Docker accepts.
fn hull_client_ref_ok(name: &str) -> bool {
    hull_oci::reference::parse(name).is_ok()
}
