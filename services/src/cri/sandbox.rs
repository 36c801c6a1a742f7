//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox.
//!
//! A pod is a directory of files its containers share (hostname, hosts,
//! resolv.conf), a `/dev/shm` of its own, a network namespace attached
//! through CNI (never the host's unless the pod asks for it: a CNI failure
//! fails the call and undoes what was made), and the pause process, run by
//! the pod's hull-shim, that holds the namespaces. Its containers join the
//! same shim (grouped by the sandbox id annotation).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_proto::errdefs::Kind;
use hull_proto::runtime::v1::{
    LinuxPodSandboxStatus, Namespace as CriNamespace, NamespaceMode, NamespaceOption, PodIp,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus, Protocol,
};
use tonic::Status;

use super::names::Abandoned;
use super::spec::{self, PodFiles};
use super::store::{self, Sandbox, SandboxState};
use super::{blocking, ops, status_of, Cri};

/// The interface pods get.
const IFNAME: &str = "eth0";
/// The pod's /dev/shm size, as containerd's (64 MiB).
const SHM_SIZE: &str = "size=65536k";

fn invalid(msg: impl Into<String>) -> Status {
    status_of(Kind::InvalidArgument, msg)
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Status {
    let msg = format!("{what} {}", path.display());
    move |e| status_of(Kind::Unknown, format!("{msg}: {e}"))
}

/// Cgroup hierarchy roots: the v1 ones on a v1 or hybrid host, else the
/// unified one.
fn cgroup_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = left.split(' ').nth(4) else {
            continue;
        };
        match right.split(' ').next() {
            Some("cgroup") => v1.push(PathBuf::from(mp)),
            Some("cgroup2") => v2.push(PathBuf::from(mp)),
            _ => {}
        }
    }
    if v1.is_empty() {
        v2
    } else {
        v1
    }
}

/// The directories of cgroup `parent` (and its missing ancestors) that do
/// not exist yet in any hierarchy: the runtime will make them for the pod,
/// and the pod's removal takes them away again.
pub fn missing_cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let mut dir = root.clone();
        for p in &parts {
            dir.push(p);
            if !dir.exists() {
                out.push(dir.clone());
            }
        }
    }
    out
}

/// Removes cgroup directories made for a pod, deepest first; one still in
/// use stays.
fn remove_cgroup_dirs(dirs: &[PathBuf]) {
    let mut dirs = dirs.to_vec();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(&d);
    }
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The CRI port mappings as CNI's portmap takes them.
fn port_mappings(config: &PodSandboxConfig) -> Vec<hull_cni::PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0 && p.container_port > 0)
        .filter_map(|p| {
            Some(hull_cni::PortMapping {
                host_port: u16::try_from(p.host_port).ok()?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: match Protocol::try_from(p.protocol).unwrap_or(Protocol::Tcp) {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                }
                .to_owned(),
                host_ip: p.host_ip.clone(),
            })
        })
        .collect()
}

impl Cri {
    fn pod_dir(&self, id: &str) -> PathBuf {
        self.pods_root.join(id)
    }

    fn pod_state_dir(&self, id: &str) -> PathBuf {
        self.pods_state.join("sandboxes").join(id)
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.pods_state.join("netns").join(id)
    }

    /// The files of pod `id` its containers mount.
    pub(super) fn pod_files(&self, sandbox: &Sandbox) -> PodFiles {
        let (_, _, ipc) = spec::pod_modes(&sandbox.config);
        PodFiles {
            dir: self.pod_dir(&sandbox.id),
            shm: (ipc != NamespaceMode::Node).then(|| self.pod_state_dir(&sandbox.id).join("shm")),
        }
    }

    /// The pause binary and the libraries it needs, found once.
    fn pause_files(&self) -> Result<(PathBuf, Vec<PathBuf>), Status> {
        let binary = self.shim_binary.clone().ok_or_else(|| {
            status_of(
                Kind::FailedPrecondition,
                "the built-in pause needs hull-shim, which was not found beside hulld or on PATH",
            )
        })?;
        let libs = self
            .pause_libraries
            .get_or_init(|| super::pause::libraries(&binary))
            .clone()
            .map_err(|e| status_of(Kind::FailedPrecondition, format!("built-in pause: {e}")))?;
        Ok((binary, libs))
    }

    /// The sandbox `prefix` names.
    pub(super) fn find_sandbox(&self, prefix: &str) -> Result<Sandbox, Status> {
        self.store
            .sandbox_id(prefix)
            .and_then(|id| self.store.sandbox(&id))
            .ok_or_else(|| {
                status_of(
                    Kind::NotFound,
                    format!("an error occurred when try to find sandbox {prefix:?}: not found"),
                )
            })
    }

    /// Persists a sandbox's state.
    async fn save_sandbox(&self, id: &str, state: &SandboxState) -> Result<(), Status> {
        self.update_extension(id, store::STATE_EXT, store::state_any(state))
            .await
    }

    /// RunPodSandbox: everything the pod needs, then its pause process.
    pub(super) async fn run_pod_sandbox(
        self: &Arc<Self>,
        config: PodSandboxConfig,
        runtime_handler: String,
        abandoned: Abandoned,
    ) -> Result<String, Status> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| invalid("sandbox config must include metadata"))?;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(invalid(
                "sandbox metadata must include a name, a namespace and a uid",
            ));
        }
        if self.runtime_binary(&runtime_handler).is_none() {
            return Err(status_of(
                Kind::NotFound,
                format!("no runtime for {runtime_handler:?} is configured"),
            ));
        }
        let id = super::new_id();
        let name = format!(
            "{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        self.names.reserve(&name, &id).await?;
        let mut sandbox = Sandbox {
            id: id.clone(),
            config,
            state: SandboxState {
                name: name.clone(),
                created_at: crate::now_nanos(),
                runtime_handler,
                ..Default::default()
            },
        };
        match self.start_sandbox(&mut sandbox).await {
            Ok(()) => {}
            Err(e) => {
                self.teardown_sandbox(&sandbox).await;
                self.names.release(&name, &id);
                return Err(e);
            }
        }
        self.store.put_sandbox(sandbox.clone());
        self.names.hold(&name, &id);
        if abandoned.is_set() {
            // The client gave up waiting: undo, so that its retry can have
            // the name.
            tracing::info!(%id, %name, "pod created after its client left; removing it");
            let _ = self.remove_pod_sandbox(&id).await;
        }
        Ok(id)
    }

    /// The OCI runtime of runtime handler `handler` (empty: the default
    /// one), as `[cri] runtimes` names it.
    pub(super) fn runtime_binary(&self, handler: &str) -> Option<&str> {
        let handler = if handler.is_empty() {
            self.config.default_runtime.as_str()
        } else {
            handler
        };
        self.config.runtimes.get(handler).map(String::as_str)
    }

    /// The steps of RunPodSandbox; what they made is recorded in
    /// `sandbox` as they go, for [`Cri::teardown_sandbox`].
    async fn start_sandbox(self: &Arc<Self>, sandbox: &mut Sandbox) -> Result<(), Status> {
        let began = std::time::Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let id = sandbox.id.clone();
        let (net, _, ipc) = spec::pod_modes(&sandbox.config);
        // The built-in pause, or the configured sandbox image (which must
        // have been pulled).
        let image = if self.config.sandbox_image.is_empty() {
            None
        } else {
            Some(
                super::images::CriImages(self.clone())
                    .for_container(&self.config.sandbox_image)
                    .await?,
            )
        };
        let (pause, libraries) = match &image {
            None => self.pause_files()?,
            Some(_) => (PathBuf::new(), Vec::new()),
        };
        let dir = self.pod_dir(&id);
        let state_dir = self.pod_state_dir(&id);
        let hostname = if net == NamespaceMode::Node || sandbox.config.hostname.is_empty() {
            host_hostname()
        } else {
            sandbox.config.hostname.clone()
        };
        let resolv = spec::resolv_conf(sandbox.config.dns_config.as_ref());
        {
            let (dir, state_dir) = (dir.clone(), state_dir.clone());
            let hostname = hostname.clone();
            blocking(move || {
                std::fs::create_dir_all(dir.join("rootfs")).map_err(io("create", &dir))?;
                std::fs::create_dir_all(&state_dir).map_err(io("create", &state_dir))?;
                let f = dir.join("hostname");
                std::fs::write(&f, format!("{hostname}\n")).map_err(io("write", &f))?;
                let f = dir.join("resolv.conf");
                match resolv {
                    Some(text) => std::fs::write(&f, text).map_err(io("write", &f))?,
                    None => {
                        let host = std::fs::read("/etc/resolv.conf").unwrap_or_default();
                        std::fs::write(&f, host).map_err(io("write", &f))?;
                    }
                }
                if ipc != NamespaceMode::Node {
                    let shm = state_dir.join("shm");
                    std::fs::create_dir_all(&shm).map_err(io("create", &shm))?;
                    let opts = format!("mode=1777,{SHM_SIZE}");
                    nix::mount::mount(
                        Some("shm"),
                        &shm,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID
                            | nix::mount::MsFlags::MS_NODEV
                            | nix::mount::MsFlags::MS_NOEXEC,
                        Some(opts.as_str()),
                    )
                    .map_err(|e| status_of(Kind::Unknown, format!("mount pod shm: {e}")))?;
                }
                Ok(())
            })
            .await?;
        }
        let parent = sandbox
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        sandbox.state.cgroups_made = if parent.is_empty() {
            missing_cgroup_dirs(super::NAMESPACE)
        } else {
            missing_cgroup_dirs(&parent)
        };

        // The network is set up while the pause starts: the namespace is
        // made first (the pause joins it by path), then the plugins run
        // beside the runtime. The hosts file gets the pod's IP when the
        // plugins are done (rewritten in place, as it is bind-mounted).
        let mut network_setup = None;
        if net != NamespaceMode::Node {
            let netns = self.netns_path(&id);
            let network = hull_cni::Cni::first_network_in(&self.cni.conf_dir).map_err(|e| {
                status_of(
                    Kind::FailedPrecondition,
                    format!("cni plugin not initialized: {e}"),
                )
            })?;
            sandbox.state.netns = Some(netns.clone());
            sandbox.state.network = Some(network.name.clone());
            {
                let netns = netns.clone();
                blocking(move || {
                    hull_cni::netns::create(&netns).map_err(|e| {
                        status_of(Kind::Unknown, format!("create network namespace: {e}"))
                    })
                })
                .await?;
            }
            let cni = self.cni.clone();
            let ports = port_mappings(&sandbox.config);
            let cid = id.clone();
            network_setup = Some(tokio::task::spawn_blocking(move || {
                let t = std::time::Instant::now();
                let added = cni.add(&network, &cid, &netns, IFNAME, &ports);
                tracing::debug!(id = %cid, cni_ms = ms(t.elapsed()), "network added");
                added.map_err(|e| {
                    status_of(
                        Kind::Unknown,
                        format!("failed to setup network for sandbox {cid:?}: {e}"),
                    )
                })
            }));
        }
        let hosts = dir.join("hosts");
        {
            let (f, text) = (hosts.clone(), spec::hosts_file(&hostname, None));
            blocking(move || std::fs::write(&f, text).map_err(io("write", &f))).await?;
        }
        let prepared = began.elapsed();
        let started = self
            .start_pause(sandbox, image.as_ref(), &pause, &libraries)
            .await;
        let paused = began.elapsed();
        // Whatever the pause did, the plugins are waited for: a teardown
        // must not race them.
        if let Some(setup) = network_setup {
            let attachment = setup
                .await
                .map_err(|e| status_of(Kind::Unknown, format!("network setup: {e}")))??;
            sandbox.state.ips = attachment.ips.clone();
        }
        let networked = began.elapsed();
        sandbox.state.pid = started?;
        if let Some(ip) = sandbox.state.ips.first().cloned() {
            let text = spec::hosts_file(&hostname, Some(&ip));
            blocking(move || std::fs::write(&hosts, text).map_err(io("write", &hosts))).await?;
        }
        self.save_sandbox(&id, &sandbox.state).await?;
        tracing::debug!(
            %id,
            prepare_ms = ms(prepared),
            pause_ms = ms(paused - prepared),
            network_wait_ms = ms(networked - paused),
            save_ms = ms(began.elapsed() - networked),
            "sandbox start stages"
        );
        Ok(())
    }

    /// Creates the sandbox's record and starts its pause; returns the
    /// pause's pid.
    async fn start_pause(
        self: &Arc<Self>,
        sandbox: &Sandbox,
        image: Option<&super::images::ImageForContainer>,
        pause: &std::path::Path,
        libraries: &[PathBuf],
    ) -> Result<u32, Status> {
        let id = sandbox.id.clone();
        // A sandbox image's root is held by a lease until the record
        // references it (the built-in pause has none).
        let lease = match image {
            Some(_) => Some(self.creation_lease().await?),
            None => None,
        };
        let recorded = self
            .record_sandbox(sandbox, image, pause, libraries, lease.as_deref())
            .await;
        if let Some(lease) = lease {
            self.end_lease(lease).await;
        }
        recorded?;
        let binary = self
            .runtime_binary(&sandbox.state.runtime_handler)
            .unwrap_or("runc");
        self.run_task(&id, ("", "", "", false), binary).await
    }

    /// The sandbox's root (for a sandbox image) and record.
    async fn record_sandbox(
        self: &Arc<Self>,
        sandbox: &Sandbox,
        image: Option<&super::images::ImageForContainer>,
        pause: &std::path::Path,
        libraries: &[PathBuf],
        lease: Option<&str>,
    ) -> Result<(), Status> {
        let id = sandbox.id.clone();
        let dir = self.pod_dir(&id);
        let files = self.pod_files(sandbox);
        let rootfs = dir.join("rootfs");
        let pause = match image {
            // Started by the shim itself when the pod runs on the default
            // runtime; another runtime handler (a VM's, say) may need its
            // runtime to hold the sandbox, so it gets the pause to run.
            None => spec::Pause::BuiltIn {
                rootfs: &rootfs,
                binary: pause,
                libraries,
                by_shim: self.runtime_binary(&sandbox.state.runtime_handler)
                    == self.runtime_binary(""),
            },
            Some(i) => {
                self.prepare_snapshot(&id, &i.chain_id, lease.unwrap_or_default())
                    .await?;
                spec::Pause::Image(&i.config)
            }
        };
        let spec_bytes = spec::sandbox(&spec::SandboxInput {
            id: &id,
            config: &sandbox.config,
            netns: sandbox.state.netns.as_deref(),
            pause,
            files: &files,
            oom_floor: self.oom_floor,
        })?;
        let mut labels = sandbox.config.labels.clone();
        labels.insert(store::KIND_LABEL.to_owned(), store::KIND_SANDBOX.to_owned());
        self.create_record(
            &id,
            labels,
            &self.config.sandbox_image,
            spec_bytes,
            image.is_some(),
            store::extensions(
                "runtime.v1.PodSandboxConfig",
                &sandbox.config,
                &sandbox.state,
            ),
        )
        .await
    }

    /// Undoes whatever of a sandbox exists: its task, network, namespace,
    /// shm, files and record. Safe to repeat.
    async fn teardown_sandbox(&self, sandbox: &Sandbox) {
        let id = &sandbox.id;
        if let Err(e) = self.kill_and_delete(id).await {
            tracing::warn!(%id, error = %e.message(), "stop the pod's pause");
        }
        if let Err(e) = self.teardown_network(sandbox).await {
            tracing::warn!(%id, error = %e.message(), "tear down the pod's network");
        }
        let (dir, state_dir) = (self.pod_dir(id), self.pod_state_dir(id));
        let cgroups = sandbox.state.cgroups_made.clone();
        let _ = blocking(move || {
            let shm = state_dir.join("shm");
            if hull_cni::netns::is_mounted(&shm) {
                let _ = nix::mount::umount2(&shm, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir_all(&state_dir);
            let _ = std::fs::remove_dir_all(&dir);
            remove_cgroup_dirs(&cgroups);
            Ok(())
        })
        .await;
        if let Err(e) = self.delete_record(id).await {
            tracing::warn!(%id, error = %e.message(), "delete the pod's record");
        }
        // A sandbox image's root (none for the built-in pause).
        if let Err(e) = self.remove_snapshot(id).await {
            tracing::warn!(%id, error = %e.message(), "remove the pod's root");
        }
    }

    /// Detaches the pod from its network and removes its namespace;
    /// idempotent.
    async fn teardown_network(&self, sandbox: &Sandbox) -> Result<(), Status> {
        let Some(netns) = sandbox.state.netns.clone() else {
            return Ok(());
        };
        let cni = self.cni.clone();
        let id = sandbox.id.clone();
        let network = sandbox.state.network.clone();
        blocking(move || {
            if let Some(name) = network {
                // The config may have changed since: the cached result
                // still names what was set up.
                let net = hull_cni::Cni::first_network_in(&cni.conf_dir)
                    .ok()
                    .filter(|n| n.name == name);
                if let Some(net) = net {
                    cni.del(&net, &id, &netns, IFNAME).map_err(|e| {
                        status_of(
                            Kind::Unknown,
                            format!("failed to destroy network for sandbox {id:?}: {e}"),
                        )
                    })?;
                }
            }
            hull_cni::netns::remove(&netns)
                .map_err(|e| status_of(Kind::Unknown, format!("remove network namespace: {e}")))
        })
        .await
    }

    /// StopPodSandbox: every container of the pod killed, the network torn
    /// down, the pause stopped. Stopping twice is fine.
    pub(super) async fn stop_pod_sandbox(&self, prefix: &str) -> Result<(), Status> {
        let sandbox = self.find_sandbox(prefix)?;
        let id = sandbox.id.clone();
        for c in self.store.containers_of(&id) {
            self.stop_container_now(&c.id).await?;
        }
        self.kill_and_delete(&id).await?;
        self.teardown_network(&sandbox).await?;
        if let Some(state) = self.store.update_sandbox(&id, |s| s.stopped = true) {
            self.save_sandbox(&id, &state).await?;
        }
        Ok(())
    }

    /// RemovePodSandbox: stops it if need be, removes its containers and
    /// everything it had. An unknown id is fine, as in containerd.
    pub(super) async fn remove_pod_sandbox(&self, prefix: &str) -> Result<(), Status> {
        let Ok(sandbox) = self.find_sandbox(prefix) else {
            return Ok(());
        };
        let id = sandbox.id.clone();
        for c in self.store.containers_of(&id) {
            self.remove_container(&c.id).await?;
        }
        self.teardown_sandbox(&sandbox).await;
        self.store.remove_sandbox(&id);
        self.names.release(&sandbox.state.name, &id);
        Ok(())
    }

    /// Whether the pod's pause runs.
    pub(super) fn sandbox_ready(sandbox: &Sandbox, task: Option<&ops::TaskProcess>) -> bool {
        !sandbox.state.stopped && task.is_some_and(ops::is_running)
    }

    fn cri_sandbox(sandbox: &Sandbox, ready: bool) -> PodSandbox {
        PodSandbox {
            id: sandbox.id.clone(),
            metadata: sandbox.config.metadata.clone(),
            state: if ready {
                PodSandboxState::SandboxReady
            } else {
                PodSandboxState::SandboxNotready
            } as i32,
            created_at: sandbox.state.created_at,
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
            runtime_handler: sandbox.state.runtime_handler.clone(),
        }
    }

    /// PodSandboxStatus.
    pub(super) async fn pod_sandbox_status(
        &self,
        prefix: &str,
        verbose: bool,
    ) -> Result<(PodSandboxStatus, BTreeMap<String, String>), Status> {
        let sandbox = self.find_sandbox(prefix)?;
        let task = self.task(&sandbox.id).await?;
        let ready = Self::sandbox_ready(&sandbox, task.as_ref());
        let ns = sandbox
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_else(NamespaceOption::default);
        let mut ips = sandbox.state.ips.iter();
        let network = if spec::pod_modes(&sandbox.config).0 == NamespaceMode::Node {
            None
        } else {
            Some(PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
            })
        };
        let status = PodSandboxStatus {
            id: sandbox.id.clone(),
            metadata: sandbox.config.metadata.clone(),
            state: Self::cri_sandbox(&sandbox, ready).state,
            created_at: sandbox.state.created_at,
            network,
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(CriNamespace { options: Some(ns) }),
            }),
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
            runtime_handler: sandbox.state.runtime_handler.clone(),
        };
        let mut info = BTreeMap::new();
        if verbose {
            let v = serde_json::json!({
                "pid": sandbox.state.pid,
                "netNamespacePath": sandbox.state.netns,
                "network": sandbox.state.network,
                "image": if self.config.sandbox_image.is_empty() { "built-in pause" } else { self.config.sandbox_image.as_str() },
                "name": sandbox.state.name,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        Ok((status, info))
    }

    /// ListPodSandbox with its filter.
    pub(super) async fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, Status> {
        let tasks = self.all_tasks().await?;
        let f = filter.unwrap_or_default();
        let mut out: Vec<PodSandbox> = self
            .store
            .sandboxes()
            .into_iter()
            .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
            .map(|s| {
                let ready = Self::sandbox_ready(&s, tasks.get(&s.id));
                Self::cri_sandbox(&s, ready)
            })
            .filter(|s| f.state.as_ref().is_none_or(|want| want.state == s.state))
            .filter(|s| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        Ok(out)
    }
}
