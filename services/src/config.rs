//! hulld's TOML config. Every key is optional; `hulld config default`
//! prints the whole default. Each section's struct lives with the code it
//! configures; this module composes them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::diff::DiffConfig;
use crate::distribution::RegistryConfig;
use crate::metadata::gc::GcConfig;
use crate::tasks::ShimConfig;
use crate::wiring::GrpcConfig;

/// Where hulld looks for its config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/hull/config.toml";

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Config format version; 2 as containerd 1.6's.
    pub version: u32,
    /// Persistent data: metadata DB, content, snapshots.
    pub root: PathBuf,
    /// Runtime state: sockets, shim bundles.
    pub state: PathBuf,
    /// `[grpc]`: the socket clients dial.
    pub grpc: GrpcConfig,
    /// `[debug]`: logging.
    pub debug: DebugConfig,
    /// `[gc]`: garbage collection.
    pub gc: GcConfig,
    /// `[diff]`: limits on applying layers.
    pub diff: DiffConfig,
    /// `[shim]`: shim binaries by runtime name.
    pub shim: ShimConfig,
    /// `[registry]`: hosts, mirrors, credentials, download concurrency.
    pub registry: RegistryConfig,
    /// `[cri]`: the Kubernetes CRI service.
    pub cri: CriConfig,
    /// `[proxy_plugins.NAME]`: snapshotters served by other processes.
    pub proxy_plugins: std::collections::BTreeMap<String, ProxyPlugin>,
}

/// `[cri]`: how the kubelet's pods are networked and run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriConfig {
    /// Directory of CNI network configs (`Status` reports NetworkReady
    /// false while it holds none).
    pub cni_conf_dir: PathBuf,
    /// Directories searched for CNI plugin binaries, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The image a pod sandbox runs; empty: hull's built-in pause, so no
    /// image must be pulled or kept from garbage collection.
    pub sandbox_image: String,
    /// The address the streaming server (exec, attach, port-forward)
    /// listens on: loopback only by default.
    pub stream_server_address: String,
    /// Its port; 0 picks a free one.
    pub stream_server_port: u16,
    /// How long a streaming URL stays valid before it is used.
    pub stream_idle_timeout: String,
    /// Runtime handlers (Kubernetes RuntimeClass `handler`) and the OCI
    /// runtime each runs its pods with: runc, or crun (same command line).
    pub runtimes: std::collections::BTreeMap<String, String>,
    /// The handler of pods that name none.
    pub default_runtime: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            sandbox_image: String::new(),
            stream_server_address: "127.0.0.1".to_owned(),
            stream_server_port: 0,
            stream_idle_timeout: "4h".to_owned(),
            runtimes: [("runc".to_owned(), "runc".to_owned())].into(),
            default_runtime: "runc".to_owned(),
        }
    }
}

/// One external plugin, as containerd's `[proxy_plugins]` names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPlugin {
    /// Plugin type; `snapshot` is the one hull supports.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix socket the plugin serves on.
    pub address: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 2,
            root: PathBuf::from("/var/lib/hull"),
            state: PathBuf::from("/run/hull"),
            grpc: GrpcConfig::default(),
            debug: DebugConfig::default(),
            gc: GcConfig::default(),
            diff: DiffConfig::default(),
            shim: ShimConfig::default(),
            registry: RegistryConfig::default(),
            cri: CriConfig::default(),
            proxy_plugins: Default::default(),
        }
    }
}

/// `[debug]`: how hulld logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// trace, debug, info, warn or error; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// The config could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parse config {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(&'static str),
}

impl Config {
    /// Reads `path`; when `required` is false a missing file means defaults.
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// When the text is not valid for this schema.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The json-file log rotation (bytes, files) for logs whose client
    /// set none.
    pub fn log_defaults(&self) -> (u64, u32) {
        let size = hull_logs::parse_size(&self.shim.log_max_size).unwrap_or(0);
        (size, self.shim.log_max_file.max(1))
    }

    /// Checks values once at startup.
    ///
    /// # Errors
    /// The first value that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grpc.address.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("grpc.address must be set"));
        }
        if !self.root.is_absolute() || !self.state.is_absolute() {
            return Err(ConfigError::Invalid(
                "root and state must be absolute paths",
            ));
        }
        self.gc.validate().map_err(ConfigError::Invalid)?;
        if !self.shim.log_max_size.is_empty()
            && hull_logs::parse_size(&self.shim.log_max_size).is_err()
        {
            return Err(ConfigError::Invalid(
                "shim.log_max_size must be a size such as 10m or 1g",
            ));
        }
        if self.shim.log_max_file == 0 {
            return Err(ConfigError::Invalid("shim.log_max_file must be at least 1"));
        }
        if self.proxy_plugins.values().any(|p| p.kind != "snapshot") {
            return Err(ConfigError::Invalid(
                "proxy_plugins: only type = \"snapshot\" is supported",
            ));
        }
        if self.registry.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid(
                "registry.max_concurrent_downloads must be at least 1",
            ));
        }
        if humantime::parse_duration(&self.cri.stream_idle_timeout).is_err() {
            return Err(ConfigError::Invalid(
                "cri.stream_idle_timeout must be a duration such as 30m or 4h",
            ));
        }
        if self
            .cri
            .stream_server_address
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return Err(ConfigError::Invalid(
                "cri.stream_server_address must be an IP address",
            ));
        }
        if !matches!(self.debug.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid("debug.format must be text or json"));
        }
        Ok(())
    }

    /// The default config as TOML.
    pub fn default_toml() -> String {
        // Serialising plain structs of strings and integers cannot fail.
        toml::to_string(&Config::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_empty_file_is_default() {
        let text = Config::default_toml();
        assert!(text.contains("[grpc]"), "{text}");
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::parse("bogus = 1").is_err());
        assert!(Config::parse("[gc]\nbogus = 1").is_err());
        let p =
            Config::parse("[proxy_plugins.remote]\ntype = \"snapshot\"\naddress = \"/run/x.sock\"")
                .unwrap();
        p.validate().unwrap();
        assert_eq!(
            p.proxy_plugins["remote"].address,
            std::path::PathBuf::from("/run/x.sock")
        );
        let c = Config::parse("[gc]\nmutation_threshold = 5").unwrap();
        assert_eq!(c.gc.mutation_threshold, 5);
        assert_eq!(c.gc.startup_delay, GcConfig::default().startup_delay);
        assert!(Config::parse("[gc]\npause_threshold = 0.9")
            .unwrap()
            .validate()
            .is_err());
    }
}
