//! CRI's records: pod sandboxes and containers, in memory for the calls
//! and persisted in their container records (`k8s.io` namespace) so that
//! they come back after a restart.
//!
//! Each record carries, as extensions, the CRI config it was created with
//! (the protobuf message itself) and a small JSON state (times, exit,
//! network) rewritten on every change of state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use hull_proto::runtime::v1::{ContainerConfig, PodSandboxConfig};
use prost::Message;
use serde::{Deserialize, Serialize};

/// The label telling CRI's records apart, as containerd's CRI labels them.
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
/// [`KIND_LABEL`] of a sandbox.
pub const KIND_SANDBOX: &str = "sandbox";
/// [`KIND_LABEL`] of a container.
pub const KIND_CONTAINER: &str = "container";
/// Extension holding the CRI config.
pub const CONFIG_EXT: &str = "io.hull.cri.config";
/// Extension holding the JSON state.
pub const STATE_EXT: &str = "io.hull.cri.state";
/// Type URL of the state extension.
const STATE_TYPE: &str = "hull.io/cri/state+json";

/// What a sandbox's record keeps besides its config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxState {
    /// Its reserved name.
    pub name: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Its network namespace (none: the host's).
    pub netns: Option<PathBuf>,
    /// The CNI network it is attached to.
    pub network: Option<String>,
    /// Its addresses, the first the pod's IP.
    pub ips: Vec<String>,
    /// The pause process.
    pub pid: u32,
    /// Stopped by StopPodSandbox (or found dead).
    pub stopped: bool,
    /// Cgroup directories made for the pod, removed with it.
    pub cgroups_made: Vec<PathBuf>,
    /// The runtime handler asked for.
    pub runtime_handler: String,
}

/// What a container's record keeps besides its config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    /// Its reserved name.
    pub name: String,
    /// Its pod.
    pub sandbox_id: String,
    /// Nanoseconds since the epoch; 0 for not yet.
    pub created_at: i64,
    /// Started.
    pub started_at: i64,
    /// Exited.
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Why it exited (Completed, Error, OOMKilled).
    pub reason: String,
    /// More about its state.
    pub message: String,
    /// The image's ID (config digest).
    pub image_id: String,
    /// The image reference it was resolved from (repo digest when known).
    pub image_ref: String,
    /// Its main process.
    pub pid: u32,
    /// Its log file.
    pub log_path: String,
    /// The signal StopContainer sends first.
    pub stop_signal: String,
    /// Its cgroup path.
    pub cgroup: String,
    /// The container ran as this uid (0 unless set).
    pub uid: u32,
}

/// A pod sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// What it was created with.
    pub config: PodSandboxConfig,
    /// How it is.
    pub state: SandboxState,
}

/// A container.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// What it was created with.
    pub config: ContainerConfig,
    /// How it is.
    pub state: ContainerState,
}

/// The records in memory.
#[derive(Debug, Default)]
pub struct Store {
    sandboxes: Mutex<HashMap<String, Sandbox>>,
    containers: Mutex<HashMap<String, Container>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Sandbox `id`.
    pub fn sandbox(&self, id: &str) -> Option<Sandbox> {
        lock(&self.sandboxes).get(id).cloned()
    }

    /// Every sandbox.
    pub fn sandboxes(&self) -> Vec<Sandbox> {
        lock(&self.sandboxes).values().cloned().collect()
    }

    /// Container `id`.
    pub fn container(&self, id: &str) -> Option<Container> {
        lock(&self.containers).get(id).cloned()
    }

    /// Every container.
    pub fn containers(&self) -> Vec<Container> {
        lock(&self.containers).values().cloned().collect()
    }

    /// Containers of pod `sandbox`.
    pub fn containers_of(&self, sandbox: &str) -> Vec<Container> {
        lock(&self.containers)
            .values()
            .filter(|c| c.state.sandbox_id == sandbox)
            .cloned()
            .collect()
    }

    /// Adds or replaces a sandbox.
    pub fn put_sandbox(&self, s: Sandbox) {
        lock(&self.sandboxes).insert(s.id.clone(), s);
    }

    /// Adds or replaces a container.
    pub fn put_container(&self, c: Container) {
        lock(&self.containers).insert(c.id.clone(), c);
    }

    /// Changes sandbox `id`'s state; returns the new state.
    pub fn update_sandbox(
        &self,
        id: &str,
        f: impl FnOnce(&mut SandboxState),
    ) -> Option<SandboxState> {
        let mut all = lock(&self.sandboxes);
        let s = all.get_mut(id)?;
        f(&mut s.state);
        Some(s.state.clone())
    }

    /// Changes container `id`'s state; returns the new state.
    pub fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerState),
    ) -> Option<ContainerState> {
        let mut all = lock(&self.containers);
        let c = all.get_mut(id)?;
        f(&mut c.state);
        Some(c.state.clone())
    }

    /// Forgets sandbox `id`.
    pub fn remove_sandbox(&self, id: &str) {
        lock(&self.sandboxes).remove(id);
    }

    /// Forgets container `id`.
    pub fn remove_container(&self, id: &str) {
        lock(&self.containers).remove(id);
    }

    /// The full id `prefix` names among `ids`: itself, or the one id it
    /// is a prefix of.
    pub fn resolve<'a>(prefix: &str, ids: impl Iterator<Item = &'a String>) -> Option<String> {
        let mut found = None;
        for id in ids {
            if id == prefix {
                return Some(id.clone());
            }
            if !prefix.is_empty() && id.starts_with(prefix) {
                if found.is_some() {
                    return None;
                }
                found = Some(id.clone());
            }
        }
        found
    }

    /// The sandbox id `prefix` names.
    pub fn sandbox_id(&self, prefix: &str) -> Option<String> {
        Store::resolve(prefix, lock(&self.sandboxes).keys())
    }

    /// The container id `prefix` names.
    pub fn container_id(&self, prefix: &str) -> Option<String> {
        Store::resolve(prefix, lock(&self.containers).keys())
    }
}

/// The extensions of a record: the config and the state.
pub fn extensions<C: Message, S: Serialize>(
    config_type: &str,
    config: &C,
    state: &S,
) -> BTreeMap<String, prost_types::Any> {
    let mut ext = BTreeMap::new();
    ext.insert(
        CONFIG_EXT.to_owned(),
        prost_types::Any {
            type_url: format!("type.googleapis.com/{config_type}"),
            value: config.encode_to_vec(),
        },
    );
    ext.insert(STATE_EXT.to_owned(), state_any(state));
    ext
}

/// The state extension alone.
pub fn state_any<S: Serialize>(state: &S) -> prost_types::Any {
    prost_types::Any {
        type_url: STATE_TYPE.to_owned(),
        // Plain structs of strings and numbers always serialise.
        value: serde_json::to_vec(state).unwrap_or_default(),
    }
}

/// Reads a record's config and state back; None when they are missing or
/// do not decode (a record CRI did not make).
pub fn decode<C: Message + Default, S: for<'de> Deserialize<'de>>(
    ext: &BTreeMap<String, prost_types::Any>,
) -> Option<(C, S)> {
    let config = C::decode(ext.get(CONFIG_EXT)?.value.as_slice()).ok()?;
    let state = serde_json::from_slice(&ext.get(STATE_EXT)?.value).ok()?;
    Some((config, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_extensions() {
        let config = PodSandboxConfig {
            hostname: "web".into(),
            ..Default::default()
        };
        let state = SandboxState {
            name: "web_default_uid_0".into(),
            ips: vec!["10.88.0.2".into()],
            ..Default::default()
        };
        let ext = extensions("runtime.v1.PodSandboxConfig", &config, &state);
        let (c, s): (PodSandboxConfig, SandboxState) = decode(&ext).unwrap();
        assert_eq!((c, s), (config, state));
        assert!(decode::<PodSandboxConfig, SandboxState>(&BTreeMap::new()).is_none());
    }

    #[test]
    fn ids_resolve_by_unique_prefix() {
        let ids = ["abc1".to_owned(), "abc2".to_owned(), "def".to_owned()];
        assert_eq!(Store::resolve("def", ids.iter()).as_deref(), Some("def"));
        assert_eq!(Store::resolve("d", ids.iter()).as_deref(), Some("def"));
        assert_eq!(Store::resolve("abc", ids.iter()), None);
        assert_eq!(Store::resolve("", ids.iter()), None);
        assert_eq!(Store::resolve("x", ids.iter()), None);
    }
}
