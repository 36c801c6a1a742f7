//! Container networking through CNI plugin binaries (Debian's
//! `containernetworking-plugins` in `/usr/lib/cni`), shared by hullctl's
//! Docker workflow and CRI.
//!
//! A [`Cni`] holds where plugins, network configs and state live. Networks
//! are CNI config lists ([`Network`]); a container's network namespace is a
//! file a namespace is bind-mounted on ([`netns`]). [`Cni::add`] runs a
//! network's plugins in order (the namespace's `lo` is up from its
//! creation), caching the result and the runtime config; [`Cni::del`] runs them in reverse with
//! what was cached, so teardown is idempotent and leaves no iptables rules
//! or IP allocations behind even when the namespace is already gone.

#![warn(missing_docs)]

pub mod netns;
mod network;
mod subnet;

pub use network::{
    Network, NetworkOptions, DEFAULT_BRIDGE, DEFAULT_NETWORK as DEFAULT_NETWORK_NAME,
};
pub use subnet::{pick_subnet, Ipv4Net};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A CNI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A plugin answered with a CNI error (or could not be run).
    #[error("CNI plugin {plugin} {command}: {message}")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// ADD, DEL or CHECK.
        command: &'static str,
        /// What it said.
        message: String,
    },
    /// No such network.
    #[error("network {0} not found")]
    NotFound(String),
    /// A network with this name exists.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// A config or option is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CniError {
    let path = path.display().to_string();
    move |source| CniError::Io { op, path, source }
}

/// A port published from the host into the container (`portmap`'s
/// `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// tcp, udp or sctp.
    pub protocol: String,
    /// Host address; empty for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// What ADD gave the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// Its addresses (without prefix length), first IPv4 first.
    pub ips: Vec<String>,
    /// The gateway of the first address.
    pub gateway: Option<String>,
    /// The full CNI result.
    pub result: Value,
}

/// Where plugins, configs and state are.
#[derive(Debug, Clone)]
pub struct Cni {
    /// Directories searched for plugin binaries.
    pub plugin_dirs: Vec<PathBuf>,
    /// Where network config lists are kept (`<name>.conflist`).
    pub conf_dir: PathBuf,
    /// Where results are cached and host-local keeps its allocations.
    pub state_dir: PathBuf,
}

/// The CNI spec version hull writes.
pub const CNI_VERSION: &str = "1.0.0";

/// Plugin directories on Debian and the upstream default.
pub fn default_plugin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
}

impl Cni {
    /// Networking with configs and state under `root`
    /// (`root/net.d`, `root/state`), and the default plugin directories.
    pub fn under(root: &Path) -> Cni {
        Cni {
            plugin_dirs: default_plugin_dirs(),
            conf_dir: root.join("net.d"),
            state_dir: root.join("state"),
        }
    }

    /// Whether the plugins networks need are installed.
    pub fn missing_plugins(&self) -> Vec<&'static str> {
        ["bridge", "host-local", "portmap"]
            .into_iter()
            .filter(|p| self.find_plugin(p).is_none())
            .collect()
    }

    fn find_plugin(&self, kind: &str) -> Option<PathBuf> {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
    }

    fn cache_path(&self, network: &str, container: &str, ifname: &str) -> PathBuf {
        self.state_dir
            .join("results")
            .join(format!("{network}-{container}-{ifname}.json"))
    }

    /// Runs one plugin; returns what it printed on success.
    fn exec(
        &self,
        command: &'static str,
        plugin: &Value,
        container: &str,
        netns: &str,
        ifname: &str,
    ) -> Result<Value, CniError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
        let fail = |message: String| CniError::Plugin {
            plugin: kind.clone(),
            command,
            message,
        };
        let bin = self
            .find_plugin(&kind)
            .ok_or_else(|| fail(format!("not found in {:?}", self.plugin_dirs)))?;
        let path = std::env::join_paths(&self.plugin_dirs).unwrap_or_default();
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("start {}: {e}", bin.display())))?;
        let input = serde_json::to_vec(plugin).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&input);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("wait: {e}")))?;
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            let msg = stdout["msg"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    let e = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                    if e.is_empty() {
                        format!("exited with {}", out.status)
                    } else {
                        e
                    }
                });
            let details = stdout["details"].as_str().unwrap_or_default();
            return Err(fail(if details.is_empty() {
                msg
            } else {
                format!("{msg}: {details}")
            }));
        }
        Ok(stdout)
    }

    /// The config one plugin of `net` gets: the list's name and version,
    /// the previous result, and the runtime config for capabilities it
    /// declares.
    fn plugin_input(net: &Network, plugin: &Value, prev: Option<&Value>, runtime: &Value) -> Value {
        let mut p = plugin.clone();
        p["name"] = json!(net.name);
        p["cniVersion"] = json!(net.cni_version);
        if let Some(prev) = prev {
            p["prevResult"] = prev.clone();
        }
        if let Some(caps) = plugin["capabilities"].as_object() {
            let mut rc = serde_json::Map::new();
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = runtime.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
            if !rc.is_empty() {
                p["runtimeConfig"] = Value::Object(rc);
            }
        }
        p
    }

    /// Attaches the namespace at `netns` to `net` as `ifname`, publishing
    /// `ports`. On failure what was set up is torn down again.
    ///
    /// # Errors
    /// The first plugin that fails.
    pub fn add(
        &self,
        net: &Network,
        container: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, CniError> {
        let ns = netns.to_string_lossy().into_owned();
        // `lo` is up already: netns::create brought it up.
        self.add_network(net, container, netns, &ns, ifname, ports)
    }

    /// The network's own plugins, in order; undone on failure.
    fn add_network(
        &self,
        net: &Network,
        container: &str,
        netns: &Path,
        ns: &str,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, CniError> {
        let runtime = json!({ "portMappings": ports });
        // Cached before the first plugin runs: a DEL after a crash midway
        // still knows the ports and the network.
        let cache = self.cache_path(&net.name, container, ifname);
        write_cache(
            &cache,
            &json!({ "runtimeConfig": runtime, "result": Value::Null }),
        )?;
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let input = Self::plugin_input(net, plugin, prev.as_ref(), &runtime);
            match self.exec("ADD", &input, container, ns, ifname) {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    let _ = self.del(net, container, netns, ifname);
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        write_cache(
            &cache,
            &json!({ "runtimeConfig": runtime, "result": result }),
        )?;
        let mut ips = Vec::new();
        let mut gateway = None;
        if let Some(list) = result["ips"].as_array() {
            for ip in list {
                if let Some(a) = ip["address"].as_str() {
                    let addr = a.split('/').next().unwrap_or(a).to_owned();
                    if gateway.is_none() {
                        gateway = ip["gateway"].as_str().map(str::to_owned);
                    }
                    ips.push(addr);
                }
            }
        }
        ips.sort_by_key(|a| a.contains(':'));
        Ok(Attachment {
            ips,
            gateway,
            result,
        })
    }

    /// Detaches `container` from `net`: every plugin's DEL in reverse
    /// order with the cached result and ports. Deleting what was never
    /// added, or twice, succeeds.
    ///
    /// # Errors
    /// A plugin's DEL error (the cache is kept so that it can be retried).
    pub fn del(
        &self,
        net: &Network,
        container: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<(), CniError> {
        let cache = self.cache_path(&net.name, container, ifname);
        let cached: Value = match std::fs::read(&cache) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(e) => return Err(io_err("read", &cache)(e)),
        };
        let runtime = cached["runtimeConfig"].clone();
        let prev = cached.get("result").filter(|r| !r.is_null()).cloned();
        // A namespace that is gone is passed as empty: plugins then only
        // release host-side state.
        let ns = if netns.exists() {
            netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let mut first_err = None;
        for plugin in net.plugins.iter().rev() {
            // A plugin that is not installed never set anything up here
            // (its ADD could not have run): nothing to undo.
            if self
                .find_plugin(plugin["type"].as_str().unwrap_or_default())
                .is_none()
            {
                continue;
            }
            let input = Self::plugin_input(net, plugin, prev.as_ref(), &runtime);
            if let Err(e) = self.exec("DEL", &input, container, &ns, ifname) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        match std::fs::remove_file(&cache) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &cache)(e)),
        }
    }

    /// Containers with a cached attachment to network `name`.
    pub fn attached(&self, name: &str) -> Vec<String> {
        let dir = self.state_dir.join("results");
        let prefix = format!("{name}-");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                let rest = f.strip_prefix(&prefix)?.strip_suffix(".json")?;
                // `<container>-<ifname>`; container ids have no '-'.
                let (id, _) = rest.rsplit_once('-')?;
                Some(id.to_owned())
            })
            .collect()
    }
}

fn write_cache(path: &Path, v: &Value) -> Result<(), CniError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(v).unwrap_or_default())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", path))
}
