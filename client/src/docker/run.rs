//! `docker create` / `docker run`: options checked up front, then the
//! image's snapshot prepared, the spec built, and the container recorded.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use hull_oci::oci_spec::runtime::{
    Capability, LinuxCpu, LinuxMemory, LinuxNamespaceType, LinuxPids, Mount, Spec,
};
use hull_oci::spec as ocispec;
use hull_proto::containerd::services::containers::v1::{
    container, Container, CreateContainerRequest,
};
use hull_proto::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use hull_proto::containerd::services::snapshots::v1::{
    PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use hull_proto::typeurl;
use tonic::Status;

use super::image::LocalImage;
use super::network::NetworkMode;
use super::spec::{check_env, resolve_env, MountSpec, MountType, PortSpec, RestartPolicy};
use super::{fsutil, invalid, labels, local, names, Docker};
use crate::Error;

/// What `docker run` (and `create`) takes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The image (normalised as Docker does).
    pub image: String,
    /// The command; empty for the image's.
    pub cmd: Vec<String>,
    /// `--entrypoint`: replaces the image's (and drops its CMD); `""`
    /// clears it.
    pub entrypoint: Option<String>,
    /// `--name`; generated when None.
    pub name: Option<String>,
    /// `--hostname`; the short id when None.
    pub hostname: Option<String>,
    /// `-e`/`--env-file` entries, in order (`KEY` alone takes this
    /// process's value).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// `-v` specs.
    pub volumes: Vec<String>,
    /// `--mount` specs.
    pub mounts: Vec<String>,
    /// `--tmpfs` specs.
    pub tmpfs: Vec<String>,
    /// `--read-only` root.
    pub read_only: bool,
    /// `-p` specs.
    pub publish: Vec<String>,
    /// `-P`: publish the image's exposed ports on free host ports.
    pub publish_all: bool,
    /// `--network`: `bridge` (default), `host`, `none` or a network name.
    pub network: Option<String>,
    /// `--memory` (e.g. `64m`).
    pub memory: Option<String>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--restart`.
    pub restart: Option<String>,
    /// `--log-opt max-size=…`, `max-file=…`.
    pub log_opts: Vec<String>,
    /// `-i`: keep a stdin pipe.
    pub interactive: bool,
    /// `-t`: a terminal.
    pub tty: bool,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
}

/// A container made by [`Docker::create`].
#[derive(Debug, Clone)]
pub struct Created {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The options, checked.
struct Plan {
    name: String,
    env: Vec<String>,
    mounts: Vec<MountSpec>,
    ports: Vec<PortSpec>,
    network: NetworkMode,
    restart: RestartPolicy,
    memory: Option<i64>,
    caps_add: Vec<Capability>,
    caps_drop: Vec<Capability>,
    cap_drop_all: bool,
    rotation: hull_logs::Rotation,
    labels: BTreeMap<String, String>,
}

/// Every capability, for `--privileged` and `--cap-add ALL`.
const ALL_CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETGID",
    "SETFCAP",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

fn capability(name: &str) -> Result<Capability, Error> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse()
        .map_err(|_| invalid(format!("unknown capability: {name:?}")))
}

/// Every capability this machine has (its bounding set, as Docker's
/// privileged containers get): asking for more fails in the kernel.
fn all_caps() -> Vec<Capability> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .filter_map(|c| c.parse::<Capability>().ok())
        .filter(|c| cap_number(*c).is_none_or(|n| bounding & (1 << n) != 0))
        .collect()
}

/// A capability's number, as the kernel counts them.
fn cap_number(c: Capability) -> Option<u32> {
    const ORDER: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let name = c.to_string();
    ORDER.iter().position(|n| *n == name).map(|p| p as u32)
}

impl Docker {
    fn plan(&self, opts: &RunOptions, taken: &dyn Fn(&str) -> bool) -> Result<Plan, Error> {
        let name = match &opts.name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !names::valid_name(n) {
                    return Err(invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_owned()
            }
            None => names::new_name(taken),
        };
        let mut env = Vec::new();
        for e in &opts.env {
            check_env(e)?;
            env.extend(resolve_env(e));
        }
        let mut mounts = Vec::new();
        for v in &opts.volumes {
            mounts.push(MountSpec::parse_volume(v)?);
        }
        for m in &opts.mounts {
            mounts.push(MountSpec::parse_mount(m)?);
        }
        for t in &opts.tmpfs {
            mounts.push(MountSpec::parse_tmpfs(t)?);
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &mounts {
            if !seen.insert(m.destination.trim_end_matches('/').to_owned()) {
                return Err(invalid(format!("Duplicate mount point: {}", m.destination)));
            }
        }
        let mut ports = Vec::new();
        for p in &opts.publish {
            ports.push(PortSpec::parse(p)?);
        }
        let network = NetworkMode::parse(opts.network.as_deref().unwrap_or("bridge"));
        if !ports.is_empty() && !network.publishes() {
            return Err(invalid(format!(
                "published ports need a bridge network, not {:?}",
                opts.network.as_deref().unwrap_or_default()
            )));
        }
        let restart = RestartPolicy::parse(opts.restart.as_deref().unwrap_or("no"))?;
        if restart != RestartPolicy::No && opts.auto_remove {
            return Err(invalid("Conflicting options: --restart and --rm"));
        }
        let memory = match &opts.memory {
            Some(m) => {
                let bytes = hull_logs::parse_size(m)
                    .map_err(|e| invalid(format!("invalid --memory: {e}")))?;
                if bytes < 6 << 20 {
                    return Err(invalid("Minimum memory limit allowed is 6MB"));
                }
                Some(bytes as i64)
            }
            None => None,
        };
        if let Some(c) = opts.cpus {
            if !(c > 0.0 && c.is_finite()) {
                return Err(invalid(format!(
                    "invalid --cpus {c}: must be a positive number"
                )));
            }
        }
        let mut caps_add = Vec::new();
        for c in &opts.cap_add {
            if c.eq_ignore_ascii_case("ALL") {
                caps_add.extend(all_caps());
            } else {
                caps_add.push(capability(c)?);
            }
        }
        let mut caps_drop = Vec::new();
        let mut cap_drop_all = false;
        for c in &opts.cap_drop {
            if c.eq_ignore_ascii_case("ALL") {
                cap_drop_all = true;
            } else {
                caps_drop.push(capability(c)?);
            }
        }
        let mut rotation = hull_logs::Rotation::default();
        for o in &opts.log_opts {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| invalid(format!("invalid log opt {o:?}: use key=value")))?;
            match k {
                "max-size" => {
                    rotation.max_size =
                        hull_logs::parse_size(v).map_err(|e| invalid(e.to_string()))?
                }
                "max-file" => {
                    rotation.max_file = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        invalid(format!("invalid max-file {v:?}: must be a positive number"))
                    })?
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown log opt '{k}' for json-file log driver"
                    )))
                }
            }
        }
        if rotation.max_file > 1 && rotation.max_size == 0 {
            return Err(invalid("max-file cannot be set without max-size"));
        }
        let mut labels = BTreeMap::new();
        for l in &opts.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            if k.is_empty() {
                return Err(invalid(format!("invalid label {l:?}")));
            }
            labels.insert(k.to_owned(), v.to_owned());
        }
        Ok(Plan {
            name,
            env,
            mounts,
            ports,
            network,
            restart,
            memory,
            caps_add,
            caps_drop,
            cap_drop_all,
            rotation,
            labels,
        })
    }

    /// The log URI every task of container `id` is created with.
    pub(crate) fn log_uri(
        &self,
        id: &str,
        rotation: hull_logs::Rotation,
    ) -> (String, std::path::PathBuf) {
        let path = self.container_dir(id).join(format!("{id}-json.log"));
        let uri = hull_logs::LogUri {
            format: hull_logs::Format::JsonFile,
            path: path.clone(),
            rotation,
        };
        if self.hull {
            (uri.to_string(), path)
        } else {
            // containerd's own shim starts a logging binary: hullctl.
            (super::logdriver::binary_uri(&self.logger, &uri), path)
        }
    }

    /// Creates a container from a local image, as `docker create` does;
    /// nothing is left behind when it fails.
    ///
    /// # Errors
    /// InvalidArgument for bad options; NotFound for an image that is
    /// not here (pull it first: [`crate::Client::pull`]); AlreadyExists for a name in
    /// use.
    pub async fn create(&self, opts: &RunOptions) -> Result<Created, Error> {
        let existing = self.all_containers().await?;
        let taken = |n: &str| {
            existing
                .iter()
                .any(|c| c.labels.get(labels::NAME).map(String::as_str) == Some(n))
        };
        let plan = self.plan(opts, &taken)?;
        if let Some(other) = existing
            .iter()
            .find(|c| c.labels.get(labels::NAME) == Some(&plan.name))
        {
            return Err(name_in_use(&plan.name, &other.id));
        }
        self.check_network(&plan.network).await?;
        let image = self.image(&opts.image).await?;
        let id = names::new_id();
        let guard = self.reserve_name(&plan.name, &id)?;
        let lease = format!("hull-create-{id}");
        self.client
            .leases()
            .create(CreateRequest {
                id: lease.clone(),
                labels: [("containerd.io/gc.expire".to_owned(), expiry())].into(),
            })
            .await?;
        let leased = self.client.with_lease(&lease);
        let result = self.create_in_lease(&leased, &id, &image, opts, plan).await;
        let _ = self
            .client
            .leases()
            .delete(DeleteRequest {
                id: lease,
                sync: false,
            })
            .await;
        match result {
            Ok(created) => {
                guard.keep();
                Ok(created)
            }
            Err(e) => {
                let _ = self
                    .client
                    .snapshots()
                    .remove(RemoveSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: id.clone(),
                    })
                    .await;
                let _ = self.teardown_network(&id).await;
                let _ = std::fs::remove_dir_all(self.container_dir(&id));
                Err(e)
            }
        }
    }

    async fn create_in_lease(
        &self,
        leased: &crate::Client,
        id: &str,
        image: &LocalImage,
        opts: &RunOptions,
        mut plan: Plan,
    ) -> Result<Created, Error> {
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir).map_err(local(format!("create {}", dir.display())))?;
        let mounts = leased
            .snapshots()
            .prepare(PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.to_owned(),
                parent: image.chain_id.clone(),
                labels: Default::default(),
            })
            .await?
            .into_inner()
            .mounts;
        let hostname = opts.hostname.clone().unwrap_or_else(|| id[..12].to_owned());
        let config = image.config.config().clone().unwrap_or_default();
        // Anonymous volumes: `-v /path` and the image's VOLUMEs.
        let mut anonymous: Vec<String> = config
            .volumes()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !plan.mounts.iter().any(|m| m.destination == *v))
            .collect();
        anonymous.sort();
        for v in anonymous {
            plan.mounts.push(MountSpec {
                kind: MountType::Volume,
                name: String::new(),
                source: String::new(),
                destination: v,
                rw: true,
                options: Vec::new(),
            });
        }
        // The root is mounted for a moment: users are looked up in its
        // /etc/passwd, and new volumes are filled from what it holds.
        let user_text = opts
            .user
            .clone()
            .or_else(|| config.user().clone())
            .unwrap_or_default();
        let needs_root = plan.mounts.iter().any(|m| m.kind == MountType::Volume)
            || (!user_text.is_empty() && !user_text.split(':').all(|p| p.parse::<u32>().is_ok()));
        let root = if needs_root {
            Some(
                fsutil::MountedRoot::mount(&mounts, &dir)
                    .map_err(local("mount the container's root"))?,
            )
        } else {
            None
        };
        for m in &mut plan.mounts {
            match m.kind {
                MountType::Volume => {
                    let name = (!m.name.is_empty()).then_some(m.name.as_str());
                    let (vol, new) = self.volume_create(name)?;
                    m.name = vol.name.clone();
                    m.source = vol.mountpoint.to_string_lossy().into_owned();
                    if let (true, Some(root)) = (new, &root) {
                        let inside = fsutil::resolve_in(root.path(), &m.destination);
                        if inside.is_dir() {
                            fsutil::copy_tree(&inside, &vol.mountpoint).map_err(local(format!(
                                "fill volume {} from the image",
                                vol.name
                            )))?;
                        }
                    }
                }
                MountType::Bind => {
                    if !Path::new(&m.source).exists() {
                        // `-v /host:/x` makes a missing host directory, as Docker does.
                        std::fs::create_dir_all(&m.source)
                            .map_err(local(format!("create {}", m.source)))?;
                    }
                }
                MountType::Tmpfs => {}
            }
        }
        let user = if user_text.is_empty() {
            None
        } else {
            let read = |p: &str| {
                root.as_ref()
                    .and_then(|r| std::fs::read_to_string(fsutil::resolve_in(r.path(), p)).ok())
            };
            Some(
                ocispec::resolve_user(
                    &user_text,
                    read("/etc/passwd").as_deref(),
                    read("/etc/group").as_deref(),
                )
                .map_err(|e| invalid(format!("unable to find user {user_text}: {e}")))?,
            )
        };
        drop(root);

        let net = self
            .setup_network(id, &plan.network, &mut plan.ports, &hostname)
            .await?;
        write_etc_files(&dir, &hostname, net.ip.as_deref(), &plan.network)?;

        let mut spec =
            ocispec::default_spec(&self.namespace, id).map_err(|e| invalid(e.to_string()))?;
        ocispec::apply_image_config(&mut spec, &image.config)
            .map_err(|e| invalid(e.to_string()))?;
        let mut process = spec.process().clone().unwrap_or_default();
        // Docker: --entrypoint replaces the image's and drops its CMD; a
        // command replaces CMD and keeps the entrypoint.
        let entrypoint = match &opts.entrypoint {
            Some(e) if e.is_empty() => Vec::new(),
            Some(e) => vec![e.clone()],
            None => config.entrypoint().clone().unwrap_or_default(),
        };
        let cmd = if !opts.cmd.is_empty() {
            opts.cmd.clone()
        } else if opts.entrypoint.is_some() {
            Vec::new()
        } else {
            config.cmd().clone().unwrap_or_default()
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() {
            return Err(invalid("no command specified"));
        }
        process.set_args(Some(args));
        let mut env = process.env().clone().unwrap_or_default();
        if opts.tty {
            env = ocispec::merge_env(&env, &["TERM=xterm".to_owned()]);
        }
        env = ocispec::merge_env(&env, &[format!("HOSTNAME={hostname}")]);
        process.set_env(Some(ocispec::merge_env(&env, &plan.env)));
        if let Some(w) = &opts.workdir {
            if !w.starts_with('/') {
                return Err(invalid(format!(
                    "the working directory '{w}' is invalid, it needs to be an absolute path"
                )));
            }
            process.set_cwd(w.into());
        }
        process.set_terminal(Some(opts.tty));
        spec.set_process(Some(process));
        if let Some(u) = &user {
            ocispec::apply_user(&mut spec, u).map_err(|e| invalid(e.to_string()))?;
        }
        let host_network = plan.network == NetworkMode::Host;
        spec.set_hostname(if host_network {
            None
        } else {
            Some(hostname.clone())
        });
        apply_mounts(&mut spec, &dir, &plan.mounts, opts.read_only)?;
        apply_security(&mut spec, opts.privileged, &plan)?;
        apply_resources(&mut spec, plan.memory, opts.cpus, opts.pids_limit);
        apply_network(&mut spec, &plan.network, net.netns.as_deref());

        let (log_uri, log_path) = self.log_uri(id, plan.rotation);
        let mut labels = plan.labels;
        labels.insert(labels::NAME.into(), plan.name.clone());
        labels.insert(labels::MOUNTS.into(), json(&plan.mounts));
        labels.insert(labels::PORTS.into(), json(&plan.ports));
        labels.insert(labels::NETWORK.into(), plan.network.to_string());
        if let Some(ip) = &net.ip {
            labels.insert(labels::IP_ADDRESS.into(), ip.clone());
        }
        labels.insert(
            labels::LOG_PATH.into(),
            log_path.to_string_lossy().into_owned(),
        );
        labels.insert(
            labels::LOG_MAX_FILE.into(),
            plan.rotation.max_file.to_string(),
        );
        labels.insert(labels::LOG_URI.into(), log_uri.clone());
        if opts.auto_remove {
            labels.insert(labels::AUTO_REMOVE.into(), "true".into());
        }
        if opts.interactive {
            labels.insert(labels::STDIN.into(), "true".into());
        }
        if opts.tty {
            labels.insert(labels::TTY.into(), "true".into());
        }
        if let Some(sig) = config.stop_signal() {
            labels.insert(labels::STOP_SIGNAL.into(), sig.clone());
        }
        if plan.restart != RestartPolicy::No {
            labels.insert(labels::RESTART_POLICY.into(), plan.restart.to_string());
            labels.insert(labels::RESTART_STATUS.into(), "stopped".into());
            labels.insert(labels::RESTART_LOGURI.into(), log_uri);
        }
        let spec_json =
            serde_json::to_vec(&spec).map_err(|e| invalid(format!("encode spec: {e}")))?;
        let container = Container {
            id: id.to_owned(),
            labels,
            image: image.name.clone(),
            runtime: Some(container::Runtime {
                name: self.runtime.clone(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: typeurl::RUNTIME_SPEC.to_owned(),
                value: spec_json,
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: id.to_owned(),
            ..Default::default()
        };
        leased
            .containers()
            .create(CreateContainerRequest {
                container: Some(container),
            })
            .await?;
        Ok(Created {
            id: id.to_owned(),
            name: plan.name,
        })
    }

    /// Claims `name` for `id` with a file only one creator can make, so
    /// two concurrent creates cannot both take it.
    pub(crate) fn reserve_name(&self, name: &str, id: &str) -> Result<NameGuard, Error> {
        let dir = self
            .root
            .join("containers")
            .join(&self.namespace)
            .join(".names");
        std::fs::create_dir_all(&dir).map_err(local("create the names directory"))?;
        let path = dir.join(name);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = f.write_all(id.as_bytes());
                    return Ok(NameGuard { path: Some(path) });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A claim by a container that is gone is stale.
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    if owner.is_empty() || !self.container_dir(&owner).exists() {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    return Err(name_in_use(name, &owner));
                }
                Err(e) => return Err(local("reserve the name")(e)),
            }
        }
        Err(name_in_use(name, ""))
    }

    /// Drops the claim on `name`.
    pub(crate) fn release_name(&self, name: &str) {
        let path = self
            .root
            .join("containers")
            .join(&self.namespace)
            .join(".names")
            .join(name);
        let _ = std::fs::remove_file(path);
    }
}

/// A name claim, dropped unless kept.
pub(crate) struct NameGuard {
    path: Option<std::path::PathBuf>,
}

impl NameGuard {
    pub(crate) fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn name_in_use(name: &str, id: &str) -> Error {
    Error::Status(Status::already_exists(format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// A lease that expires on its own if this client dies mid-create.
fn expiry() -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn write_etc_files(
    dir: &Path,
    hostname: &str,
    ip: Option<&str>,
    network: &NetworkMode,
) -> Result<(), Error> {
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(local(format!("write {name}")))
    };
    write("hostname", format!("{hostname}\n"))?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    write("hosts", hosts)?;
    // The host's resolver, without loopback servers a container cannot
    // reach (unless it shares the host's network).
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv: String = if *network == NetworkMode::Host {
        host
    } else {
        host.lines()
            .filter(|l| {
                let mut w = l.split_whitespace();
                !(w.next() == Some("nameserver")
                    && w.next()
                        .is_some_and(|a| a.starts_with("127.") || a == "::1"))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    write("resolv.conf", resolv)
}

fn bind(dest: &str, source: &str, rw: bool) -> Result<Mount, Error> {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(vec![
        "rbind".into(),
        "rprivate".into(),
        if rw { "rw".into() } else { "ro".into() },
    ]));
    Ok(m)
}

fn apply_mounts(
    spec: &mut Spec,
    dir: &Path,
    mounts: &[MountSpec],
    read_only: bool,
) -> Result<(), Error> {
    let mut list = spec.mounts().clone().unwrap_or_default();
    let taken: Vec<&str> = mounts.iter().map(|m| m.destination.as_str()).collect();
    list.retain(|m| !taken.contains(&m.destination().to_string_lossy().as_ref()));
    for f in ["hostname", "hosts", "resolv.conf"] {
        let dest = format!("/etc/{f}");
        if !taken.contains(&dest.as_str()) {
            list.push(bind(&dest, &dir.join(f).to_string_lossy(), true)?);
        }
    }
    for m in mounts {
        match m.kind {
            MountType::Volume | MountType::Bind => {
                list.push(bind(&m.destination, &m.source, m.rw)?)
            }
            MountType::Tmpfs => {
                let mut t = Mount::default();
                t.set_destination(m.destination.clone().into());
                t.set_typ(Some("tmpfs".into()));
                t.set_source(Some("tmpfs".into()));
                let mut o: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
                o.push(if m.rw { "rw".into() } else { "ro".into() });
                o.extend(m.options.iter().cloned());
                t.set_options(Some(o));
                list.push(t);
            }
        }
    }
    spec.set_mounts(Some(list));
    if read_only {
        if let Some(mut root) = spec.root().clone() {
            root.set_readonly(Some(true));
            spec.set_root(Some(root));
        }
    }
    Ok(())
}

fn apply_security(spec: &mut Spec, privileged: bool, plan: &Plan) -> Result<(), Error> {
    let mut process = spec.process().clone().unwrap_or_default();
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let mut set: std::collections::HashSet<Capability> =
        caps.bounding().clone().unwrap_or_default();
    if privileged {
        set.extend(all_caps());
    }
    if plan.cap_drop_all {
        set.clear();
    }
    for c in &plan.caps_drop {
        set.remove(c);
    }
    set.extend(plan.caps_add.iter().copied());
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));
    if privileged {
        if let Some(mut linux) = spec.linux().clone() {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
            let mut res = linux.resources().clone().unwrap_or_default();
            let mut all = hull_oci::oci_spec::runtime::LinuxDeviceCgroup::default();
            all.set_allow(true);
            all.set_access(Some("rwm".into()));
            res.set_devices(Some(vec![all]));
            linux.set_resources(Some(res));
            spec.set_linux(Some(linux));
        }
        // /sys writable, as Docker's privileged containers have it.
        if let Some(mut mounts) = spec.mounts().clone() {
            for m in &mut mounts {
                if m.destination() == Path::new("/sys") {
                    if let Some(o) = m.options().clone() {
                        m.set_options(Some(
                            o.into_iter()
                                .map(|x| if x == "ro" { "rw".into() } else { x })
                                .collect(),
                        ));
                    }
                }
            }
            spec.set_mounts(Some(mounts));
        }
    }
    Ok(())
}

fn apply_resources(spec: &mut Spec, memory: Option<i64>, cpus: Option<f64>, pids: Option<i64>) {
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let mut res = linux.resources().clone().unwrap_or_default();
    if let Some(m) = memory {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m));
        res.set_memory(Some(mem));
    }
    if let Some(c) = cpus {
        let mut cpu = LinuxCpu::default();
        cpu.set_period(Some(100_000));
        cpu.set_quota(Some((c * 100_000.0) as i64));
        res.set_cpu(Some(cpu));
    }
    if let Some(p) = pids {
        let mut l = LinuxPids::default();
        l.set_limit(if p <= 0 { -1 } else { p });
        res.set_pids(Some(l));
    }
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
}

fn apply_network(spec: &mut Spec, mode: &NetworkMode, netns: Option<&str>) {
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    match mode {
        NetworkMode::Host => namespaces.retain(|n| {
            !matches!(
                n.typ(),
                LinuxNamespaceType::Network | LinuxNamespaceType::Uts
            )
        }),
        _ => {
            if let Some(path) = netns {
                for n in &mut namespaces {
                    if n.typ() == LinuxNamespaceType::Network {
                        n.set_path(Some(path.into()));
                    }
                }
            }
        }
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}
