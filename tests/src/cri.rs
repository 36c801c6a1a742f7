//! A hulld serving CRI with a CNI network of the test's own (Debian's
//! bridge, host-local and portmap plugins; a bridge device and /24 no
//! other test has; address allocations kept in the test's directory), a
//! registry on 127.0.0.1 seeded with a busybox image, and a CRI client
//! built from proto/.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hull_proto::runtime::v1::image_service_client::ImageServiceClient;
use hull_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use hull_proto::runtime::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
};
use tonic::transport::Channel;

use crate::daemon::Daemon;
use crate::image::{busybox_layer, image, write_oci_archive};
use crate::registry::{hosts_toml, Registry};

/// The image's `/etc/passwd`: root and `app` (1000:1000).
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";

/// A CRI daemon, its registry and network.
pub struct Pods {
    /// The daemon.
    pub d: Daemon,
    /// Its registry (holds `pods/busybox:1`).
    pub registry: Registry,
    /// RuntimeService.
    pub rt: RuntimeServiceClient<Channel>,
    /// ImageService.
    pub images: ImageServiceClient<Channel>,
    /// The image's name.
    pub image: String,
    /// Where the kubelet would keep pod logs.
    pub logs: tempfile::TempDir,
    /// The CNI config directory.
    pub net_d: PathBuf,
    /// host-local's allocations.
    pub ipam: PathBuf,
    /// The network's subnet.
    pub subnet: String,
    dir: tempfile::TempDir,
    _cgroups: CgroupDirs,
}

impl Pods {
    /// Starts it all; `extra_config` is appended to hulld's config.
    pub async fn start(extra_config: &str) -> Pods {
        Pods::start_with(|_| extra_config.to_owned()).await
    }

    /// Starts it all; `extra_config` gets the registry's host and returns
    /// what is appended to hulld's config.
    pub async fn start_with(extra_config: impl FnOnce(&str) -> String) -> Pods {
        let registry = Registry::start("");
        let extra_config = extra_config(&registry.host);
        let dir = tempfile::Builder::new()
            .prefix("hull-cri-")
            .tempdir()
            .expect("tempdir");
        let archive = dir.path().join("img.tar");
        let extra = BTreeMap::from([
            ("etc/passwd".to_owned(), PASSWD.as_bytes().to_vec()),
            ("etc/group".to_owned(), b"root:x:0:\napp:x:1000:\n".to_vec()),
            ("www/hello".to_owned(), b"hello from the pod\n".to_vec()),
        ]);
        write_oci_archive(&archive, &image(busybox_layer(&extra)), "seed");
        registry.seed(&archive, "pods/busybox", "1", None);
        let certs = dir.path().join("certs.d");
        hosts_toml(
            &certs,
            &registry.host,
            &format!("server = \"http://{}\"\n", registry.host),
        );
        let net_d = dir.path().join("net.d");
        let ipam = dir.path().join("ipam");
        std::fs::create_dir_all(&net_d).expect("net.d");
        // Daemons of one test process get distinct bridges and subnets.
        let (bridge, subnet) = crate::daemon::unique_bridge();
        let gateway = subnet.replace(".0/24", ".1");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(net_d.join("10-pods.conflist"), conf.to_string()).expect("conflist");
        let config = format!(
            "[registry]\nconfig_path = \"{}\"\n[cri]\ncni_conf_dir = \"{}\"\n{extra_config}",
            certs.display(),
            net_d.display()
        );
        let mut d = Daemon::start_with_config("k8s.io", &config).await;
        d.bridge = (bridge, subnet.clone());
        let channel = d.client().await.channel();
        let rt = RuntimeServiceClient::new(channel.clone());
        let mut images = ImageServiceClient::new(channel);
        let name = format!("{}/pods/busybox:1", registry.host);
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull the test image");
        let logs = tempfile::Builder::new()
            .prefix("hull-pod-logs-")
            .tempdir()
            .expect("tempdir");
        Pods {
            d,
            registry,
            rt,
            images,
            image: name,
            logs,
            net_d,
            ipam,
            subnet,
            _cgroups: CgroupDirs(cgroup_top(&dir)),
            dir,
        }
    }

    /// A pod's config: its own network, PID namespace per container (the
    /// kubelet's default), logs under the test's log directory.
    pub fn pod(&self, name: &str) -> PodSandboxConfig {
        let log_dir = self.logs.path().join(name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("uid-{name}"),
                namespace: "default".to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_dir.display().to_string(),
            labels: [("app".to_owned(), name.to_owned())].into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(name),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container running `command` of the test image.
    pub fn container(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Addresses host-local still holds for the network.
    pub fn allocations(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect()
    }

    /// The cgroup parent of pod `name`: under a directory of this
    /// fixture's own, which its drop removes even after a failed test.
    pub fn cgroup_parent(&self, name: &str) -> String {
        format!("/{}/{name}", self.cgroup_top())
    }

    fn cgroup_top(&self) -> String {
        cgroup_top(&self.dir)
    }

    /// The test's scratch directory.
    pub fn scratch(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// The cgroup directory of the fixture with scratch directory `dir`.
fn cgroup_top(dir: &tempfile::TempDir) -> String {
    let tag = dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("hull-test-pods-{tag}")
}

/// A fixture's pod cgroup directories, removed when it drops: after the
/// daemon (the field comes after it), so that no pod process still holds
/// one.
struct CgroupDirs(String);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.0);
    }
}

/// Removes cgroup `rel` (a path under each hierarchy's root) and the
/// cgroups under it, deepest first, in every hierarchy. runc makes a pod's
/// parents and leaves them; rmdir takes only cgroups with no process left.
pub fn remove_cgroup_tree(rel: &str) {
    fn remove(dir: &std::path::Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        remove(&h.path().join(rel.trim_start_matches('/')));
    }
}

/// Mount points under `needle` in this process's mount table.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// iptables rules (nat and filter) naming `needle`.
pub fn iptables_rules_containing(needle: &str) -> Vec<String> {
    let out = std::process::Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The SPDY streaming client (tests/go/kubestream, on Go's spdystream as
/// kubectl is), built once per test binary; None when Go or spdystream is
/// not installed.
pub fn kubestream() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go/kubestream/main.go");
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools");
            std::fs::create_dir_all(&dir).ok()?;
            // Each test binary builds its own copy: they may run at once.
            let bin = dir.join(format!("kubestream-{}", std::process::id()));
            let ok = std::process::Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(&src)
                .env("GOPATH", "/usr/share/gocode")
                .env("GO111MODULE", "off")
                .env("GOCACHE", dir.join("cache"))
                .env("GOFLAGS", "")
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(bin)
        })
        .clone()
}

/// The WebSocket streaming client (tests/py/kubews.py, on the Kubernetes
/// Python client); None when that client is not installed.
pub fn kubews() -> Option<(PathBuf, PathBuf)> {
    let python = PathBuf::from("/usr/bin/python3");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import kubernetes.stream.ws_client"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| {
        (
            python,
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/kubews.py"),
        )
    })
}
