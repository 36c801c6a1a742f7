//! `system prune` and `system df`.

use std::path::Path;

use hull_proto::containerd::services::snapshots::v1::UsageRequest;

use super::list::State;
use super::Docker;
use crate::Error;

/// What `system prune` removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Stopped containers (ids).
    pub containers: Vec<String>,
    /// Images (names).
    pub images: Vec<String>,
    /// Networks.
    pub networks: Vec<String>,
    /// Volumes.
    pub volumes: Vec<String>,
}

/// One line of `system df`.
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    /// Images, Containers, Local Volumes.
    pub kind: &'static str,
    /// How many.
    pub total: usize,
    /// How many are in use.
    pub active: usize,
    /// Bytes.
    pub size: u64,
    /// Bytes prune would free.
    pub reclaimable: u64,
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|r| r.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

impl Docker {
    /// Removes stopped containers, then images no container uses (with
    /// `all`; else only dangling ones: names without a tag), networks no
    /// container is on, and (with `volumes`) volumes no container uses.
    /// Unreferenced snapshots and blobs go with the daemon's garbage
    /// collection, which image removal starts.
    ///
    /// # Errors
    /// The first removal that fails.
    pub async fn prune(&self, all: bool, volumes: bool) -> Result<PruneReport, Error> {
        let mut report = PruneReport::default();
        for c in self.list(true).await? {
            if matches!(c.status, State::Exited { .. } | State::Created) {
                self.remove(&c.id, false, false).await?;
                report.containers.push(c.id);
            }
        }
        let used: std::collections::BTreeSet<String> = self
            .all_containers()
            .await?
            .into_iter()
            .map(|c| c.image)
            .collect();
        for (summary, _) in self.images().await? {
            if used.contains(&summary.name) {
                continue;
            }
            if all || summary.tag == "<none>" {
                self.remove_image(&summary.name, true).await?;
                report.images.push(summary.name);
            }
        }
        report.networks = self.network_prune().await?;
        if volumes {
            report.volumes = self.volume_prune().await?;
        }
        Ok(report)
    }

    /// Disk use by images, containers and volumes.
    ///
    /// # Errors
    /// When the daemon cannot be asked.
    pub async fn disk_usage(&self) -> Result<Vec<DiskUsage>, Error> {
        let containers = self.list(true).await?;
        let used: std::collections::BTreeSet<String> =
            containers.iter().map(|c| c.image.clone()).collect();
        let mut images = DiskUsage {
            kind: "Images",
            ..Default::default()
        };
        for (s, _) in self.images().await? {
            images.total += 1;
            images.size += s.size;
            if used.contains(&s.name) {
                images.active += 1;
            } else {
                images.reclaimable += s.size;
            }
        }
        let mut cs = DiskUsage {
            kind: "Containers",
            ..Default::default()
        };
        for c in &containers {
            cs.total += 1;
            let size = self
                .client
                .snapshots()
                .usage(UsageRequest {
                    snapshotter: c.record.snapshotter.clone(),
                    key: c.record.snapshot_key.clone(),
                })
                .await
                .map(|u| u.into_inner().size.max(0) as u64)
                .unwrap_or(0);
            cs.size += size;
            if matches!(c.status, State::Running { .. } | State::Paused { .. }) {
                cs.active += 1;
            } else {
                cs.reclaimable += size;
            }
        }
        let users = self.volume_users().await?;
        let mut vs = DiskUsage {
            kind: "Local Volumes",
            ..Default::default()
        };
        for v in self.volume_list()? {
            let size = du(&v.mountpoint);
            vs.total += 1;
            vs.size += size;
            if users.contains_key(&v.name) {
                vs.active += 1;
            } else {
                vs.reclaimable += size;
            }
        }
        Ok(vec![images, cs, vs])
    }
}
