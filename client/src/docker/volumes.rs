//! Named volumes: directories under `<daemon root>/volumes/<name>/_data`,
//! in use while a container's mounts label names them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use hull_proto::containerd::services::containers::v1::ListContainersRequest;
use hull_proto::containerd::services::namespaces::v1::ListNamespacesRequest;
use serde::Serialize;
use tonic::Status;

use super::spec::{MountSpec, MountType};
use super::{invalid, labels, local, Docker};
use crate::Error;

/// One volume.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// The directory containers see.
    pub mountpoint: PathBuf,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

impl Docker {
    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn volume_at(&self, name: &str) -> Result<Volume, Error> {
        let dir = self.volumes_dir().join(name);
        let meta = std::fs::metadata(dir.join("_data")).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Status(Status::not_found(format!("no such volume: {name}")))
            } else {
                local(format!("volume {name}"))(e)
            }
        })?;
        let created = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Volume {
            name: name.to_owned(),
            driver: "local".into(),
            mountpoint: dir.join("_data"),
            created_at: humantime::format_rfc3339_seconds(created).to_string(),
        })
    }

    /// Creates volume `name` (a random name when None); returns it and
    /// whether it is new. Creating one that exists is not an error, as in
    /// Docker.
    ///
    /// # Errors
    /// InvalidArgument for a bad name; Internal when the directory cannot
    /// be made.
    pub fn volume_create(&self, name: Option<&str>) -> Result<(Volume, bool), Error> {
        let name = match name {
            Some(n) if n.len() >= 2 && super::names::valid_name(n) => n.to_owned(),
            Some(n) => {
                return Err(invalid(format!(
                    "volume name {n:?} includes invalid characters: only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
                )))
            }
            None => super::names::new_id(),
        };
        let dir = self.volumes_dir().join(&name);
        std::fs::create_dir_all(self.volumes_dir()).map_err(local("create volumes directory"))?;
        let new = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(local(format!("create volume {name}"))(e)),
        };
        if new || !dir.join("_data").exists() {
            std::fs::create_dir_all(dir.join("_data"))
                .map_err(local(format!("create volume {name}")))?;
        }
        Ok((self.volume_at(&name)?, new))
    }

    /// Every volume.
    ///
    /// # Errors
    /// When the volumes directory cannot be read.
    pub fn volume_list(&self) -> Result<Vec<Volume>, Error> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(self.volumes_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(local("read volumes")(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(v) = self.volume_at(&name) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One volume.
    ///
    /// # Errors
    /// NotFound when there is none.
    pub fn volume_inspect(&self, name: &str) -> Result<Volume, Error> {
        self.volume_at(name)
    }

    /// Which containers (in any namespace) mount which volumes.
    pub async fn volume_users(&self) -> Result<BTreeMap<String, Vec<String>>, Error> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let namespaces = self
            .client
            .namespaces()
            .list(ListNamespacesRequest::default())
            .await?
            .into_inner()
            .namespaces;
        for ns in namespaces {
            let containers = self
                .client
                .with_namespace(&ns.name)
                .containers()
                .list(ListContainersRequest::default())
                .await?
                .into_inner()
                .containers;
            for c in containers {
                for m in mounts_of(&c.labels) {
                    if m.kind == MountType::Volume {
                        users.entry(m.name).or_default().push(c.id.clone());
                    }
                }
            }
        }
        Ok(users)
    }

    /// Removes volume `name`.
    ///
    /// # Errors
    /// NotFound when there is none; FailedPrecondition while a container
    /// uses it.
    pub async fn volume_remove(&self, name: &str) -> Result<(), Error> {
        self.volume_at(name)?;
        if let Some(ids) = self.volume_users().await?.get(name) {
            return Err(Error::Status(Status::failed_precondition(format!(
                "remove {name}: volume is in use - [{}]",
                ids.join(", ")
            ))));
        }
        let dir = self.volumes_dir().join(name);
        std::fs::remove_dir_all(&dir).map_err(local(format!("remove volume {name}")))
    }

    /// Removes every volume no container uses; returns their names.
    ///
    /// # Errors
    /// The first that cannot be removed.
    pub async fn volume_prune(&self) -> Result<Vec<String>, Error> {
        let users = self.volume_users().await?;
        let mut removed = Vec::new();
        for v in self.volume_list()? {
            if !users.contains_key(&v.name) {
                let dir = self.volumes_dir().join(&v.name);
                std::fs::remove_dir_all(&dir)
                    .map_err(local(format!("remove volume {}", v.name)))?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }
}

/// The mounts a container's label records.
pub(crate) fn mounts_of(labels: &BTreeMap<String, String>) -> Vec<MountSpec> {
    labels
        .get(labels::MOUNTS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}
