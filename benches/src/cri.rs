//! `--cri`: pods through CRI as the kubelet starts them, against hulld
//! and containerd's CRI plugin, with the same image (from a local
//! docker-registry on 127.0.0.1), the same CNI config (Debian's bridge and
//! host-local plugins) and the same pod and container configs.
//!
//! Measured: pod start (RunPodSandbox, CreateContainer and StartContainer,
//! as the kubelet calls them) one at a time, and 100 pods started 10 at a
//! time; then, with 30 pods running, the daemon's RSS and the shims'
//! total PSS. containerd runs its pause image (pulled before timing, from
//! the same registry); hulld its built-in pause.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use hull_proto::runtime::v1::image_service_client::ImageServiceClient;
use hull_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use hull_proto::runtime::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use hull_tests::image::{busybox_layer, image, image_with_cmd, write_oci_archive};
use hull_tests::registry::{hosts_toml, Registry};
use tonic::transport::Channel;

use super::tasks::{median, pss_kib, shim_pids};
use super::{start_hulld_with, wait_ready, which, Server};

/// What both daemons are given.
struct Setup {
    /// Serves the images until the run ends.
    _registry: Registry,
    dir: tempfile::TempDir,
    image: String,
    pause: String,
    certs: PathBuf,
    bridge: String,
    subnet: String,
}

impl Drop for Setup {
    /// The bridge plugin never removes its bridge: the run does, however
    /// it ends.
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Setup {
    fn new() -> Result<Setup> {
        let registry = Registry::start("");
        let dir = tempfile::Builder::new()
            .prefix("hull-bench-cri-")
            .tempdir()?;
        let layer = busybox_layer(&BTreeMap::new());
        let app = dir.path().join("app.tar");
        write_oci_archive(&app, &image(layer.clone()), "app");
        registry.seed(&app, "bench/busybox", "1", None);
        // containerd's sandbox image: the same busybox, pausing.
        let pause = dir.path().join("pause.tar");
        write_oci_archive(
            &pause,
            &image_with_cmd(layer, &["/bin/busybox", "sleep", "2147483647"]),
            "pause",
        );
        registry.seed(&pause, "bench/pause", "1", None);
        let certs = dir.path().join("certs.d");
        hosts_toml(
            &certs,
            &registry.host,
            &format!("server = \"http://{}\"\n", registry.host),
        );
        let (bridge, subnet) = hull_tests::daemon::unique_bridge();
        Ok(Setup {
            image: format!("{}/bench/busybox:1", registry.host),
            pause: format!("{}/bench/pause:1", registry.host),
            _registry: registry,
            dir,
            certs,
            bridge,
            subnet,
        })
    }

    /// A fresh CNI config dir for one daemon's run (its own IPAM store).
    fn net_d(&self, name: &str) -> Result<PathBuf> {
        let net_d = self.dir.path().join(name).join("net.d");
        std::fs::create_dir_all(&net_d)?;
        let gateway = self.subnet.replace(".0/24", ".1");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local",
                          "ranges": [[{"subnet": self.subnet, "gateway": gateway}]],
                          "dataDir": self.dir.path().join(name).join("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(net_d.join("10-bench.conflist"), conf.to_string())?;
        Ok(net_d)
    }
}

/// containerd with its CRI plugin on a private root.
async fn start_containerd_cri(setup: &Setup, net_d: &Path) -> Result<Option<Server>> {
    let Ok(bin) = which("containerd") else {
        return Ok(None);
    };
    let dir = tempfile::Builder::new()
        .prefix("containerd-bench-cri-")
        .tempdir()?;
    let d = dir.path();
    let address = d.join("containerd.sock");
    let config = format!(
        r#"version = 2
root = {root:?}
state = {state:?}
[grpc]
  address = {sock:?}
[ttrpc]
  address = {ttrpc:?}
[plugins."io.containerd.internal.v1.opt"]
  path = {opt:?}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause:?}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This host lacks CAP_SYS_RESOURCE: without this the pause's -998
  # fails in runc (hulld clamps on its own).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = {net_d:?}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {certs:?}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
        root = d.join("root"),
        state = d.join("state"),
        sock = address,
        ttrpc = d.join("containerd.sock.ttrpc"),
        opt = d.join("opt"),
        pause = setup.pause,
        net_d = net_d,
        certs = setup.certs,
    );
    std::fs::write(d.join("config.toml"), config)?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(d.join("config.toml"))
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_ready(&address, &mut child).await?;
    Ok(Some(Server {
        child,
        address,
        _dir: dir,
    }))
}

/// The CRI clients of a daemon.
#[derive(Clone)]
struct Cri {
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    async fn connect(server: &Server) -> Result<Cri> {
        let channel = hull_client::Client::connect(&server.address)
            .await
            .context("connect")?
            .channel();
        Ok(Cri {
            rt: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    async fn pull(&mut self, image: &str) -> Result<()> {
        self.images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("pull {image}"))?;
        Ok(())
    }
}

fn pod_config(name: &str, logs: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            namespace: "bench".to_owned(),
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: logs.join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            // The kubelet's defaults: the pod's network and IPC, a PID
            // namespace per container.
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

/// How long each call of a pod's start took.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    run: Duration,
    create: Duration,
    start: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.run + self.create + self.start
    }
}

/// Starts pod `name` with one container as the kubelet does; how long
/// each call took.
async fn start_pod(
    mut cri: Cri,
    image: String,
    name: String,
    logs: PathBuf,
    cgroup_parent: String,
) -> Result<Phases> {
    let pod = pod_config(&name, &logs, &cgroup_parent);
    let t = Instant::now();
    let pod_id = cri
        .rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("run pod {name}"))?
        .into_inner()
        .pod_sandbox_id;
    let run = t.elapsed();
    let t = Instant::now();
    let id = cri
        .rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id,
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".to_owned(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                command: vec!["/bin/busybox".into(), "sleep".into(), "100000".into()],
                log_path: "app/0.log".to_owned(),
                ..Default::default()
            }),
            sandbox_config: Some(pod),
        })
        .await
        .with_context(|| format!("create in {name}"))?
        .into_inner()
        .container_id;
    let create = t.elapsed();
    let t = Instant::now();
    cri.rt
        .start_container(StartContainerRequest { container_id: id })
        .await
        .with_context(|| format!("start in {name}"))?;
    Ok(Phases {
        run,
        create,
        start: t.elapsed(),
    })
}

async fn remove_pods(cri: &mut Cri) -> Result<()> {
    let pods = cri
        .rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    for p in pods {
        cri.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await?;
        cri.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: p.id,
            })
            .await?;
    }
    Ok(())
}

/// One daemon's figures.
#[derive(Debug, Default)]
struct Figures {
    one_ms: f64,
    run_ms: f64,
    create_ms: f64,
    start_ms: f64,
    hundred_s: f64,
    hundred_median_ms: f64,
    rss_mib: f64,
    shims: usize,
    shims_pss_mib: f64,
}

/// One daemon's figures; whatever happens, its pods and their cgroups are
/// removed before it returns, so that a failed run leaves nothing running.
async fn measure(
    server: &Server,
    setup: &Setup,
    pulls: &[&str],
    tag: &str,
    sizes: (usize, usize, usize),
) -> Result<Figures> {
    let cgroup_parent = format!("/hull-bench-{tag}-{}", std::process::id());
    let mut cri = Cri::connect(server).await?;
    let measured = measure_pods(server, &mut cri, setup, pulls, tag, sizes, &cgroup_parent).await;
    if measured.is_err() {
        // Pods still starting in the background finish first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Err(e) = remove_pods(&mut cri).await {
            eprintln!("{tag}: removing the pods after a failure: {e:#}");
        }
    }
    // The pods' cgroups, deepest first (containerd leaves its pods' own
    // directories on cgroupfs).
    hull_tests::cri::remove_cgroup_tree(&cgroup_parent);
    measured
}

async fn measure_pods(
    server: &Server,
    cri: &mut Cri,
    setup: &Setup,
    pulls: &[&str],
    tag: &str,
    sizes: (usize, usize, usize),
    cgroup_parent: &str,
) -> Result<Figures> {
    let (serial, many, resident) = sizes;
    for p in pulls {
        cri.pull(p).await?;
    }
    let logs = setup.dir.path().join(tag).join("logs");
    let cgroup_parent = cgroup_parent.to_owned();
    let mut f = Figures::default();
    // Warm up: the first pod pays for first-time work in either daemon.
    start_pod(
        cri.clone(),
        setup.image.clone(),
        "warm".into(),
        logs.clone(),
        cgroup_parent.clone(),
    )
    .await?;
    remove_pods(cri).await?;
    let mut one = Vec::new();
    let mut phases = Vec::new();
    for i in 0..serial {
        let d = start_pod(
            cri.clone(),
            setup.image.clone(),
            format!("one-{i}"),
            logs.clone(),
            cgroup_parent.clone(),
        )
        .await?;
        one.push(d.total().as_secs_f64() * 1000.0);
        phases.push(d);
    }
    f.one_ms = median(one);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    f.run_ms = median(phases.iter().map(|p| ms(p.run)).collect());
    f.create_ms = median(phases.iter().map(|p| ms(p.create)).collect());
    f.start_ms = median(phases.iter().map(|p| ms(p.start)).collect());
    remove_pods(cri).await?;
    let t = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let mut tasks = Vec::new();
    for i in 0..many {
        let permit = sem.clone().acquire_owned().await?;
        let (cri, image, logs, cg) = (
            cri.clone(),
            setup.image.clone(),
            logs.clone(),
            cgroup_parent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = start_pod(cri, image, format!("many-{i}"), logs, cg).await;
            drop(permit);
            r
        }));
    }
    let mut each = Vec::new();
    for t in tasks {
        each.push(t.await??.total().as_secs_f64() * 1000.0);
    }
    f.hundred_s = t.elapsed().as_secs_f64();
    f.hundred_median_ms = median(each);
    remove_pods(cri).await?;
    for i in 0..resident {
        start_pod(
            cri.clone(),
            setup.image.clone(),
            format!("resident-{i}"),
            logs.clone(),
            cgroup_parent.clone(),
        )
        .await?;
    }
    // Let start-up allocations settle before sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.rss_mib = server.rss_kib() as f64 / 1024.0;
    let shims = shim_pids(&server.address);
    f.shims = shims.len();
    f.shims_pss_mib = shims.iter().map(|p| pss_kib(*p)).sum::<u64>() as f64 / 1024.0;
    remove_pods(cri).await?;
    Ok(f)
}

pub async fn main_cri(quick: bool) -> Result<()> {
    if !Path::new("/usr/lib/cni/bridge").exists() {
        bail!("needs containernetworking-plugins");
    }
    let sizes = if quick { (5, 20, 10) } else { (20, 100, 30) };
    let setup = Setup::new()?;
    let hull_net = setup.net_d("hull")?;
    let config = format!(
        "[registry]\nconfig_path = \"{}\"\n[cri]\ncni_conf_dir = \"{}\"\n",
        setup.certs.display(),
        hull_net.display()
    );
    nix::unistd::sync();
    let (hull, _) = start_hulld_with(&config).await?;
    let h = measure(&hull, &setup, &[&setup.image], "hull", sizes).await?;
    drop(hull);
    let ctd_net = setup.net_d("containerd")?;
    nix::unistd::sync();
    let c = match start_containerd_cri(&setup, &ctd_net).await? {
        Some(server) => {
            let f = measure(
                &server,
                &setup,
                &[&setup.image, &setup.pause],
                "containerd",
                sizes,
            )
            .await?;
            drop(server);
            Some(f)
        }
        None => None,
    };
    let (serial, many, resident) = sizes;
    let rows = [
        (
            format!("pod start, median of {serial} (ms)"),
            h.one_ms,
            c.as_ref().map(|c| c.one_ms),
        ),
        (
            "  RunPodSandbox, median (ms)".to_owned(),
            h.run_ms,
            c.as_ref().map(|c| c.run_ms),
        ),
        (
            "  CreateContainer, median (ms)".to_owned(),
            h.create_ms,
            c.as_ref().map(|c| c.create_ms),
        ),
        (
            "  StartContainer, median (ms)".to_owned(),
            h.start_ms,
            c.as_ref().map(|c| c.start_ms),
        ),
        (
            format!("{many} pods 10 at a time, total (s)"),
            h.hundred_s,
            c.as_ref().map(|c| c.hundred_s),
        ),
        (
            format!("{many} pods 10 at a time, median pod (ms)"),
            h.hundred_median_ms,
            c.as_ref().map(|c| c.hundred_median_ms),
        ),
        (
            format!("daemon RSS, {resident} pods (MiB)"),
            h.rss_mib,
            c.as_ref().map(|c| c.rss_mib),
        ),
        (
            format!("shims' PSS, {resident} pods (MiB)"),
            h.shims_pss_mib,
            c.as_ref().map(|c| c.shims_pss_mib),
        ),
    ];
    println!(
        "{:<44} {:>10} {:>11} {:>10}",
        "measure (lower is better)", "hulld", "containerd", "hull/ctrd"
    );
    for (name, hv, cv) in rows {
        match cv {
            Some(cv) => println!("{name:<44} {hv:>10.2} {cv:>11.2} {:>10.2}", hv / cv),
            None => println!("{name:<44} {hv:>10.2} {:>11} {:>10}", "-", "-"),
        }
    }
    println!(
        "shims with {resident} pods: hulld {}, containerd {}",
        h.shims,
        c.as_ref().map_or(0, |c| c.shims)
    );
    Ok(())
}
