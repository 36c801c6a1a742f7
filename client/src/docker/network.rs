//! Container networks through hull-cni: the default `bridge` network
//! (made on first use), `host`, `none`, and named bridge networks.
//! Configs and state live in `<daemon root>/cni`; a container's network
//! namespace is `<container dir>/netns`, made at create and removed at rm,
//! so that restarts keep the container's address.

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;

use hull_cni::{netns, Cni, CniError, Network, NetworkOptions, PortMapping};
use tonic::Status;

use super::spec::PortSpec;
use super::{invalid, labels, Docker};
use crate::Error;

/// Which network a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A bridge network (`bridge` is the default one).
    Bridge(String),
    /// The host's own network.
    Host,
    /// A namespace with only loopback.
    None,
}

impl NetworkMode {
    /// Reads `--network`.
    pub fn parse(text: &str) -> NetworkMode {
        match text {
            "" | "default" | "bridge" => NetworkMode::Bridge(hull_cni::DEFAULT_NETWORK_NAME.into()),
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            name => NetworkMode::Bridge(name.to_owned()),
        }
    }

    /// Whether ports can be published on it.
    pub fn publishes(&self) -> bool {
        matches!(self, NetworkMode::Bridge(_))
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::Bridge(n) => f.write_str(n),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::None => f.write_str("none"),
        }
    }
}

/// What joining a network gave a container.
#[derive(Debug, Default)]
pub(crate) struct NetInfo {
    pub ip: Option<String>,
    pub netns: Option<String>,
}

fn cni_error(e: CniError) -> Error {
    match e {
        CniError::NotFound(n) => Error::Status(Status::not_found(format!("network {n} not found"))),
        CniError::Exists(n) => Error::Status(Status::already_exists(format!(
            "network with name {n} already exists"
        ))),
        CniError::Invalid(m) => invalid(m),
        e => Error::Status(Status::internal(e.to_string())),
    }
}

/// Runs blocking CNI work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CniError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Status(Status::internal(format!("network task: {e}"))))?
        .map_err(cni_error)
}

/// Whether a host port can be taken now (nothing listens on it).
fn port_free(ip: &str, port: u16, proto: &str) -> bool {
    let ip: IpAddr = if ip.is_empty() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        match ip.parse() {
            Ok(ip) => ip,
            Err(_) => return false,
        }
    };
    let addr = SocketAddr::new(ip, port);
    match proto {
        "udp" => UdpSocket::bind(addr).is_ok(),
        _ => TcpListener::bind(addr).is_ok(),
    }
}

/// A free host port, as the kernel picks one.
fn any_port(ip: &str, proto: &str) -> Option<u16> {
    let ip: IpAddr = if ip.is_empty() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        ip.parse().ok()?
    };
    let addr = SocketAddr::new(ip, 0);
    match proto {
        "udp" => UdpSocket::bind(addr)
            .ok()?
            .local_addr()
            .ok()
            .map(|a| a.port()),
        _ => TcpListener::bind(addr)
            .ok()?
            .local_addr()
            .ok()
            .map(|a| a.port()),
    }
}

impl Docker {
    /// hull-cni over the daemon's root.
    pub fn cni(&self) -> Cni {
        Cni::under(&self.root.join("cni"))
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("netns")
    }

    fn bridge_network(&self, name: &str) -> Result<Network, CniError> {
        let cni = self.cni();
        if name == hull_cni::DEFAULT_NETWORK_NAME {
            cni.default_network(&NetworkOptions {
                subnet: self.bridge_subnet.clone(),
                bridge: self.bridge_device.clone(),
            })
        } else {
            cni.network(name)
        }
    }

    pub(crate) async fn check_network(&self, mode: &NetworkMode) -> Result<(), Error> {
        if let NetworkMode::Bridge(name) = mode {
            if name != hull_cni::DEFAULT_NETWORK_NAME {
                let cni = self.cni();
                let name = name.clone();
                blocking(move || cni.network(&name)).await?;
            }
            let missing = self.cni().missing_plugins();
            if !missing.is_empty() {
                return Err(Error::Status(Status::failed_precondition(format!(
                    "CNI plugins {missing:?} are not installed (Debian: containernetworking-plugins)"
                ))));
            }
        }
        Ok(())
    }

    /// Joins container `id` to its network and publishes `ports`
    /// (choosing host ports where 0).
    pub(crate) async fn setup_network(
        &self,
        id: &str,
        mode: &NetworkMode,
        ports: &mut [PortSpec],
        _hostname: &str,
    ) -> Result<NetInfo, Error> {
        let NetworkMode::Bridge(name) = mode else {
            return Ok(NetInfo::default());
        };
        let others = self.published_ports().await?;
        for p in ports.iter_mut() {
            if p.host_port == 0 {
                p.host_port = any_port(&p.host_ip, &p.protocol)
                    .ok_or_else(|| invalid(format!("no free host port on {:?}", p.host_ip)))?;
            }
            let clash = others.iter().any(|o| {
                o.host_port == p.host_port
                    && o.protocol == p.protocol
                    && (o.host_ip.is_empty() || p.host_ip.is_empty() || o.host_ip == p.host_ip)
            });
            if clash || !port_free(&p.host_ip, p.host_port, &p.protocol) {
                let ip = if p.host_ip.is_empty() {
                    "0.0.0.0"
                } else {
                    &p.host_ip
                };
                return Err(Error::Status(Status::failed_precondition(format!(
                    "Bind for {ip}:{} failed: port is already allocated",
                    p.host_port
                ))));
            }
        }
        let mappings: Vec<PortMapping> = ports
            .iter()
            .map(|p| PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
            })
            .collect();
        let net = {
            let me = self.clone();
            let name = name.clone();
            blocking(move || me.bridge_network(&name)).await?
        };
        let path = self.netns_path(id);
        let cni = self.cni();
        let id = id.to_owned();
        let p = path.clone();
        let attachment = blocking(move || {
            netns::create(&p)?;
            cni.add(&net, &id, &p, "eth0", &mappings).inspect_err(|_| {
                let _ = netns::remove(&p);
            })
        })
        .await?;
        Ok(NetInfo {
            ip: attachment.ips.first().cloned(),
            netns: Some(path.to_string_lossy().into_owned()),
        })
    }

    /// Detaches container `id` from every network it is on and removes
    /// its namespace; what is already gone is skipped.
    pub(crate) async fn teardown_network(&self, id: &str) -> Result<(), Error> {
        let cni = self.cni();
        let path = self.netns_path(id);
        let id = id.to_owned();
        blocking(move || {
            let mut first = None;
            for net in cni.networks()? {
                if cni.attached(&net.name).contains(&id) {
                    if let Err(e) = cni.del(&net, &id, &path, "eth0") {
                        first.get_or_insert(e);
                    }
                }
            }
            netns::remove(&path)?;
            first.map_or(Ok(()), Err)
        })
        .await
    }

    async fn published_ports(&self) -> Result<Vec<PortSpec>, Error> {
        Ok(self
            .all_containers()
            .await?
            .iter()
            .flat_map(|c| ports_of(&c.labels))
            .collect())
    }

    /// `network create NAME [--subnet CIDR]`.
    ///
    /// # Errors
    /// AlreadyExists; InvalidArgument for a bad name or subnet.
    pub async fn network_create(&self, name: &str, subnet: Option<&str>) -> Result<Network, Error> {
        let cni = self.cni();
        let name = name.to_owned();
        let opts = NetworkOptions {
            subnet: subnet.map(str::to_owned),
            bridge: None,
        };
        blocking(move || cni.create_network(&name, &opts)).await
    }

    /// `network ls`: the default network (made if missing), the others,
    /// and `host` and `none`.
    ///
    /// # Errors
    /// When the configs cannot be read.
    pub async fn network_list(&self) -> Result<Vec<Network>, Error> {
        let me = self.clone();
        blocking(move || {
            me.bridge_network(hull_cni::DEFAULT_NETWORK_NAME)?;
            me.cni().networks()
        })
        .await
    }

    /// `network inspect NAME`.
    ///
    /// # Errors
    /// NotFound.
    pub async fn network_inspect(&self, name: &str) -> Result<(Network, Vec<String>), Error> {
        let me = self.clone();
        let name = name.to_owned();
        blocking(move || {
            let net = me.bridge_network(&name)?;
            let users = me.cni().attached(&name);
            Ok((net, users))
        })
        .await
    }

    /// `network rm NAME`.
    ///
    /// # Errors
    /// NotFound; FailedPrecondition while containers use it or for the
    /// built-in ones.
    pub async fn network_remove(&self, name: &str) -> Result<(), Error> {
        if matches!(name, "bridge" | "host" | "none") {
            return Err(Error::Status(Status::failed_precondition(format!(
                "{name} is a pre-defined network and cannot be removed"
            ))));
        }
        let cni = self.cni();
        let n = name.to_owned();
        blocking(move || cni.remove_network(&n))
            .await
            .map_err(|e| match e {
                Error::Status(s) if s.code() == tonic::Code::InvalidArgument => {
                    Error::Status(Status::failed_precondition(s.message().to_owned()))
                }
                e => e,
            })
    }

    /// Removes every network no container is attached to (not the
    /// default one); returns their names.
    ///
    /// # Errors
    /// When one cannot be removed.
    pub async fn network_prune(&self) -> Result<Vec<String>, Error> {
        let cni = self.cni();
        blocking(move || {
            let mut removed = Vec::new();
            for net in cni.networks()? {
                if net.name != hull_cni::DEFAULT_NETWORK_NAME && cni.attached(&net.name).is_empty()
                {
                    cni.remove_network(&net.name)?;
                    removed.push(net.name);
                }
            }
            Ok(removed)
        })
        .await
    }
}

/// The ports a container's label records.
pub(crate) fn ports_of(l: &std::collections::BTreeMap<String, String>) -> Vec<PortSpec> {
    l.get(labels::PORTS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}
