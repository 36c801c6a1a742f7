//! Networks: CNI config lists in the config directory, one per name.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::subnet::{pick_subnet, Ipv4Net};
use crate::{io_err, Cni, CniError, CNI_VERSION};

/// One network: a CNI config list.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// The list's CNI version.
    pub cni_version: String,
    /// Plugin configs, in ADD order.
    pub plugins: Vec<Value>,
    /// The IPv4 subnet hull gave it, when hull made it.
    pub subnet: Option<String>,
    /// The bridge device, when it is a bridge network.
    pub bridge: Option<String>,
}

/// How `network create` makes a network.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// Subnet (`a.b.c.d/n`); a free one is picked when None.
    pub subnet: Option<String>,
    /// Bridge device name; derived from the network name when None.
    pub bridge: Option<String>,
}

/// The built-in default network's name, as Docker calls it.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's bridge device.
pub const DEFAULT_BRIDGE: &str = "hull0";

impl Network {
    fn parse(text: &[u8]) -> Result<Network, CniError> {
        let v: Value = serde_json::from_slice(text)
            .map_err(|e| CniError::Invalid(format!("network config: {e}")))?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| CniError::Invalid("network config has no name".into()))?
            .to_owned();
        let plugins = match v["plugins"].as_array() {
            Some(list) => list.clone(),
            // A single-plugin `.conf`: the config is its one plugin.
            None if v["type"].is_string() => vec![v.clone()],
            None => return Err(CniError::Invalid(format!("network {name} has no plugins"))),
        };
        if plugins.is_empty() || plugins.iter().any(|p| !p["type"].is_string()) {
            return Err(CniError::Invalid(format!(
                "network {name}: every plugin needs a type"
            )));
        }
        Ok(Network {
            cni_version: v["cniVersion"].as_str().unwrap_or(CNI_VERSION).to_owned(),
            subnet: v["hull"]["subnet"].as_str().map(str::to_owned),
            bridge: plugins
                .iter()
                .find(|p| p["type"] == "bridge")
                .and_then(|p| p["bridge"].as_str())
                .map(str::to_owned),
            name,
            plugins,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": self.plugins,
            "hull": { "subnet": self.subnet },
        })
    }
}

fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 64
}

/// A bridge device name (at most 15 bytes) for network `name`.
fn bridge_for(name: &str) -> String {
    if name.len() <= 10 && name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return format!("hull-{name}");
    }
    // FNV-1a: short, stable, and different for different names.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("hull-{:08x}", h as u32)
}

impl Cni {
    fn conf_path(&self, name: &str) -> PathBuf {
        self.conf_dir.join(format!("{name}.conflist"))
    }

    /// Every network, by name.
    ///
    /// # Errors
    /// When the config directory cannot be read.
    pub fn networks(&self) -> Result<Vec<Network>, CniError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.conf_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("read", &self.conf_dir)(e)),
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "conflist") {
                if let Ok(bytes) = std::fs::read(&p) {
                    if let Ok(n) = Network::parse(&bytes) {
                        out.push(n);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The network of the first config file (`.conf`, `.conflist` or
    /// `.json`, by name) in `dir`, as the kubelet's runtimes choose it.
    ///
    /// # Errors
    /// NotFound when `dir` has no config; Invalid when the first one does
    /// not parse.
    pub fn first_network_in(dir: &std::path::Path) -> Result<Network, CniError> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(e) => e
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", dir)(e)),
        };
        files.sort();
        let first = files
            .first()
            .ok_or_else(|| CniError::NotFound(format!("no network config in {}", dir.display())))?;
        let bytes = std::fs::read(first).map_err(io_err("read", first))?;
        Network::parse(&bytes).map_err(|e| CniError::Invalid(format!("{}: {e}", first.display())))
    }

    /// Network `name`.
    ///
    /// # Errors
    /// NotFound when there is none.
    pub fn network(&self, name: &str) -> Result<Network, CniError> {
        let p = self.conf_path(name);
        match std::fs::read(&p) {
            Ok(b) => Network::parse(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(CniError::NotFound(name.to_owned()))
            }
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// Makes bridge network `name`: the bridge plugin with host-local
    /// addresses from its subnet, masquerading out, and portmap.
    ///
    /// # Errors
    /// Exists for a taken name; Invalid for a bad name or a subnet that
    /// overlaps another network's.
    pub fn create_network(&self, name: &str, opts: &NetworkOptions) -> Result<Network, CniError> {
        if !valid_name(name) || matches!(name, "host" | "none" | "default") {
            return Err(CniError::Invalid(format!("invalid network name {name:?}")));
        }
        if self.conf_path(name).exists() {
            return Err(CniError::Exists(name.to_owned()));
        }
        let others: Vec<Ipv4Net> = self
            .networks()?
            .iter()
            .filter_map(|n| n.subnet.as_deref().and_then(|s| Ipv4Net::parse(s).ok()))
            .collect();
        let subnet = match &opts.subnet {
            Some(s) => {
                let n = Ipv4Net::parse(s)?;
                if let Some(o) = others.iter().find(|o| o.overlaps(&n)) {
                    return Err(CniError::Invalid(format!(
                        "subnet {n} overlaps network subnet {o}"
                    )));
                }
                n
            }
            None => pick_subnet(&others)?,
        };
        let bridge = opts.bridge.clone().unwrap_or_else(|| {
            if name == crate::network::DEFAULT_NETWORK {
                DEFAULT_BRIDGE.to_owned()
            } else {
                bridge_for(name)
            }
        });
        let ipam_dir = self.state_dir.join("ipam");
        let net = Network {
            name: name.to_owned(),
            cni_version: CNI_VERSION.to_owned(),
            plugins: vec![
                json!({
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": subnet.to_string(), "gateway": subnet.gateway().to_string() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": ipam_dir,
                    },
                }),
                json!({ "type": "portmap", "capabilities": { "portMappings": true } }),
            ],
            subnet: Some(subnet.to_string()),
            bridge: Some(bridge),
        };
        std::fs::create_dir_all(&self.conf_dir).map_err(io_err("create", &self.conf_dir))?;
        let p = self.conf_path(name);
        let tmp = p.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&net.to_json()).unwrap_or_default(),
        )
        .map_err(io_err("write", &tmp))?;
        // Never replaces a network made meanwhile.
        std::fs::hard_link(&tmp, &p).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CniError::Exists(name.to_owned())
            } else {
                io_err("create", &p)(e)
            }
        })?;
        let _ = std::fs::remove_file(&tmp);
        Ok(net)
    }

    /// The default `bridge` network, made on first use as `opts` say
    /// (device `hull0` and a free subnet unless they say otherwise).
    ///
    /// # Errors
    /// As [`Cni::create_network`].
    pub fn default_network(&self, opts: &NetworkOptions) -> Result<Network, CniError> {
        match self.network(DEFAULT_NETWORK) {
            Err(CniError::NotFound(_)) => {}
            other => return other,
        }
        match self.create_network(DEFAULT_NETWORK, opts) {
            Err(CniError::Exists(_)) => self.network(DEFAULT_NETWORK),
            other => other,
        }
    }

    /// Removes network `name`'s config and its bridge device. Refused
    /// while a container is attached.
    ///
    /// # Errors
    /// NotFound; Invalid while in use.
    pub fn remove_network(&self, name: &str) -> Result<(), CniError> {
        let net = self.network(name)?;
        let users = self.attached(name);
        if !users.is_empty() {
            return Err(CniError::Invalid(format!(
                "error while removing network: network {name} has active endpoints ({})",
                users.join(", ")
            )));
        }
        std::fs::remove_file(self.conf_path(name))
            .map_err(io_err("remove", &self.conf_path(name)))?;
        if let Some(br) = net.bridge {
            // The bridge plugin never deletes its device; `ip` does.
            let _ = std::process::Command::new("ip")
                .args(["link", "delete", &br, "type", "bridge"])
                .stderr(std::process::Stdio::null())
                .status();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_config_in_a_directory_is_the_network() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            Cni::first_network_in(d.path()),
            Err(CniError::NotFound(_))
        ));
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge","bridge":"br-a"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("00-readme.txt"), "not a config").unwrap();
        let n = Cni::first_network_in(d.path()).unwrap();
        assert_eq!((n.name.as_str(), n.plugins.len()), ("a", 1));
        assert_eq!(n.bridge.as_deref(), Some("br-a"));
        std::fs::write(d.path().join("05-broken.conf"), "{ nope").unwrap();
        let e = Cni::first_network_in(d.path()).unwrap_err().to_string();
        assert!(e.contains("05-broken.conf"), "{e}");
    }

    #[test]
    fn networks_are_created_listed_and_refused_twice() {
        let d = tempfile::tempdir().unwrap();
        let cni = Cni::under(d.path());
        let a = cni
            .create_network("front", &NetworkOptions::default())
            .unwrap();
        assert_eq!(a.bridge.as_deref(), Some("hull-front"));
        let b = cni
            .create_network("a-very-long-network-name", &NetworkOptions::default())
            .unwrap();
        assert!(b.bridge.as_ref().unwrap().len() <= 15);
        let sa = Ipv4Net::parse(a.subnet.as_deref().unwrap()).unwrap();
        let sb = Ipv4Net::parse(b.subnet.as_deref().unwrap()).unwrap();
        assert!(!sa.overlaps(&sb));
        assert!(matches!(
            cni.create_network("front", &NetworkOptions::default()),
            Err(CniError::Exists(_))
        ));
        let opts = NetworkOptions {
            subnet: a.subnet.clone(),
            bridge: None,
        };
        assert!(matches!(
            cni.create_network("c", &opts),
            Err(CniError::Invalid(_))
        ));
        assert!(cni
            .create_network("bad name", &NetworkOptions::default())
            .is_err());
        let names: Vec<_> = cni
            .networks()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a-very-long-network-name", "front"]);
        assert_eq!(
            cni.default_network(&NetworkOptions::default())
                .unwrap()
                .bridge
                .as_deref(),
            Some(DEFAULT_BRIDGE)
        );
        assert!(matches!(cni.network("nope"), Err(CniError::NotFound(_))));
    }
}
