//! Pods through CRI as the kubelet drives them, against a real hulld, runc,
//! Debian's CNI plugins and a registry on 127.0.0.1, with a CRI client
//! built from proto/.

use std::io::{Read, Write};
use std::time::Duration;

use hull_proto::runtime::v1::{
    ContainerFilter, ContainerState, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter,
    PodSandboxState, PodSandboxStatusRequest, PortMapping, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use hull_tests::cri::{iptables_rules_containing, mounts_containing, Pods};
use hull_tests::daemon::is_root;
use hull_tests::registry::free_port;

fn have_tools() -> bool {
    let found = |b: &str| {
        std::process::Command::new("which")
            .arg(b)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ok = is_root()
        && found("docker-registry")
        && found("skopeo")
        && std::path::Path::new("/usr/lib/cni/bridge").exists();
    if !ok {
        eprintln!("skipped: needs root, docker-registry, skopeo and containernetworking-plugins");
    }
    ok
}

async fn exec(p: &mut Pods, id: &str, cmd: &[&str]) -> (String, String, i32) {
    let r =
        p.rt.exec_sync(ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
        .into_inner();
    (
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
        r.exit_code,
    )
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubelets_pod_lifecycle() {
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let host_port = free_port();
    let mut pod = p.pod("web");
    pod.port_mappings = vec![PortMapping {
        protocol: 0,
        container_port: 80,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let pod_id =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(pod_id.len(), 64);

    let status =
        p.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .expect("pod status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let ip = status.network.expect("network").ip;
    let prefix = p.subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "{ip} in {}", p.subnet);
    // containerd keeps CRI's records where ctr sees them.
    let records = p.d.ctr_ok(&["containers", "ls", "-q"]);
    assert!(records.contains(&pod_id), "{records}");

    // Two containers: a web server and a shell that writes to its log.
    let create = |name: &str, cmd: &[&str]| CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(p.container(name, cmd)),
        sandbox_config: Some(pod.clone()),
    };
    let web_req = create(
        "web",
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let sh_req = create(
        "sh",
        &[
            "/bin/sh",
            "-c",
            "echo hello; echo oops >&2; exec sleep 1000",
        ],
    );
    let web =
        p.rt.create_container(web_req)
            .await
            .expect("create web")
            .into_inner()
            .container_id;
    let sh =
        p.rt.create_container(sh_req)
            .await
            .expect("create sh")
            .into_inner()
            .container_id;
    let created =
        p.rt.container_status(ContainerStatusRequest {
            container_id: sh.clone(),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(created.state, ContainerState::ContainerCreated as i32);
    for id in [&web, &sh] {
        p.rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start");
    }
    let running =
        p.rt.container_status(ContainerStatusRequest {
            container_id: sh.clone(),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    assert!(running.started_at >= running.created_at && running.started_at > 0);

    // One shim serves the whole pod.
    let shims = std::process::Command::new("pgrep")
        .args(["-f", &format!("hull-shim.*-id {pod_id}")])
        .output()
        .expect("pgrep");
    let shim_pids = String::from_utf8_lossy(&shims.stdout).lines().count();
    assert_eq!(shim_pids, 1, "one shim for the pod");

    // The containers share the pod's network (localhost) and IPC.
    let (out, _, code) = exec(
        &mut p,
        &sh,
        &["/bin/busybox", "wget", "-qO-", "http://127.0.0.1:80/hello"],
    )
    .await;
    assert_eq!((out.as_str(), code), ("hello from the pod\n", 0));
    let (ipc_sh, _, _) = exec(
        &mut p,
        &sh,
        &["/bin/busybox", "readlink", "/proc/self/ns/ipc"],
    )
    .await;
    let (ipc_web, _, _) = exec(
        &mut p,
        &web,
        &["/bin/busybox", "readlink", "/proc/self/ns/ipc"],
    )
    .await;
    assert!(ipc_sh.starts_with("ipc:["), "{ipc_sh}");
    assert_eq!(ipc_sh, ipc_web);
    let (hostname, _, _) = exec(&mut p, &sh, &["/bin/busybox", "hostname"]).await;
    assert_eq!(hostname.trim(), "web");
    // ExecSync reports the exit code and both streams.
    let (out, err, code) = exec(
        &mut p,
        &sh,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
    )
    .await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));
    // A command past its timeout fails as the kubelet's probes expect.
    let e =
        p.rt.exec_sync(ExecSyncRequest {
            container_id: sh.clone(),
            cmd: vec!["/bin/busybox".into(), "sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .expect_err("times out");
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");

    // The pod's port mapping reaches the web server from the host.
    let page = http_get(host_port, "/hello");
    assert!(page.contains("hello from the pod"), "{page}");

    // Logs in the CRI format at the path the kubelet gave.
    let log = p.logs.path().join("web").join("sh/0.log");
    let text = std::fs::read_to_string(&log).expect("container log");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F oops")),
        "{text}"
    );
    let stamp = lines[0].split(' ').next().unwrap_or("");
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");

    // Listing and filters.
    let listed =
        p.rt.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);
    let pods =
        p.rt.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [("app".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .expect("list pods")
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod_id);

    // StopContainer: sh, PID 1 of its own namespace, ignores SIGTERM, so
    // the grace period passes and SIGKILL ends it.
    let t = std::time::Instant::now();
    p.rt.stop_container(StopContainerRequest {
        container_id: sh.clone(),
        timeout: 2,
    })
    .await
    .expect("stop");
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    let stopped =
        p.rt.container_status(ContainerStatusRequest {
            container_id: sh.clone(),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    assert_eq!((stopped.exit_code, stopped.reason.as_str()), (137, "Error"));
    assert!(stopped.finished_at > stopped.started_at);

    for id in [&web, &sh] {
        p.rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove container");
    }
    // Removing twice is fine, as the kubelet retries.
    p.rt.remove_container(RemoveContainerRequest {
        container_id: sh.clone(),
    })
    .await
    .expect("remove again");
    p.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop pod");
    p.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop pod twice");
    let after =
        p.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(after.state, PodSandboxState::SandboxNotready as i32);
    assert!(p.allocations().is_empty(), "{:?}", p.allocations());
    p.rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("remove pod");
    let e =
        p.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .expect_err("gone");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Nothing is left: mounts, namespaces, rules, addresses, shims, records.
    assert!(
        mounts_containing(&pod_id).is_empty(),
        "{:?}",
        mounts_containing(&pod_id)
    );
    assert!(mounts_containing(&sh).is_empty());
    assert!(iptables_rules_containing(&pod_id[..12]).is_empty());
    assert!(
        std::fs::read_dir(p.d.dir().join("state/cri/netns"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
    let shims = std::process::Command::new("pgrep")
        .args(["-f", &format!("hull-shim.*-id {pod_id}")])
        .output()
        .expect("pgrep");
    assert!(shims.stdout.is_empty(), "the pod's shim exited");
    let records = p.d.ctr_ok(&["containers", "ls", "-q"]);
    assert!(records.trim().is_empty(), "{records}");
    let cgroup = format!("/sys/fs/cgroup/memory{}", p.cgroup_parent("web"));
    assert!(!std::path::Path::new(&cgroup).exists(), "{cgroup} removed");
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    r.err().map(|e| e.code()).unwrap_or(tonic::Code::Ok)
}

async fn run_pod(p: &mut Pods, config: hull_proto::runtime::v1::PodSandboxConfig) -> String {
    p.rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .expect("run pod")
    .into_inner()
    .pod_sandbox_id
}

async fn run_container(
    p: &mut Pods,
    pod_id: &str,
    pod: &hull_proto::runtime::v1::PodSandboxConfig,
    config: hull_proto::runtime::v1::ContainerConfig,
) -> String {
    let id =
        p.rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;
    p.rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start container");
    id
}

async fn container_state(p: &mut Pods, id: &str) -> hull_proto::runtime::v1::ContainerStatus {
    p.rt.container_status(ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    })
    .await
    .expect("container status")
    .into_inner()
    .status
    .expect("status")
}

async fn pod_state(p: &mut Pods, id: &str) -> hull_proto::runtime::v1::PodSandboxStatus {
    p.rt.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.to_owned(),
        verbose: false,
    })
    .await
    .expect("pod status")
    .into_inner()
    .status
    .expect("status")
}

async fn remove_all(p: &mut Pods) {
    let pods =
        p.rt.list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("list")
            .into_inner()
            .items;
    for s in pods {
        p.rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: s.id,
        })
        .await
        .expect("remove pod");
    }
}

/// What a pod leaves behind in the daemon's state, the mount table, CNI and
/// the process table: nothing, once removed.
fn assert_nothing_left(p: &Pods) {
    let state = p.d.dir().join("state/cri");
    let count = |d: &str| {
        std::fs::read_dir(state.join(d))
            .map(|e| e.count())
            .unwrap_or(0)
    };
    assert_eq!(count("netns"), 0, "network namespaces left");
    assert_eq!(count("sandboxes"), 0, "pod state left");
    assert!(
        mounts_containing(&p.d.dir().display().to_string()).is_empty(),
        "{:?}",
        mounts_containing(&p.d.dir().display().to_string())
    );
    assert!(p.allocations().is_empty(), "{:?}", p.allocations());
    // A shim told to shut down exits on its own, just after its answer: give
    // it a moment rather than racing it.
    let pattern = format!("hull-shim.*{}", p.d.address().display());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let shims = loop {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .expect("pgrep");
        if out.stdout.is_empty() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        shims.stdout.is_empty(),
        "shims left: {}",
        String::from_utf8_lossy(&shims.stdout)
    );
    let records = p.d.ctr_ok(&["containers", "ls", "-q"]);
    assert!(records.trim().is_empty(), "{records}");
    let results = std::fs::read_dir(state.join("cni/results"))
        .map(|e| e.count())
        .unwrap_or(0);
    assert_eq!(results, 0, "CNI results left");
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_survive_a_daemon_crash() {
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let mut pods = Vec::new();
    for i in 0..5 {
        let name = format!("keep{i}");
        let config = p.pod(&name);
        let id = run_pod(&mut p, config.clone()).await;
        let cmd = if i == 0 {
            // Exits while hulld is down.
            vec!["/bin/sh", "-c", "sleep 2; exit 7"]
        } else {
            vec![
                "/bin/sh",
                "-c",
                "while true; do echo tick; /bin/busybox sleep 0.2; done",
            ]
        };
        let cc = p.container("main", &cmd);
        let c = run_container(&mut p, &id, &config, cc).await;
        let ip = pod_state(&mut p, &id).await.network.expect("net").ip;
        pods.push((id, c, ip, name));
    }
    let log = |name: &str| {
        std::fs::read_to_string(p.logs.path().join(name).join("main/0.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = log("keep1");
    p.d.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    p.d.start_again().await;
    let mut p2 = p;
    // The clients reconnect to the new daemon.
    let channel = p2.d.client().await.channel();
    p2.rt = hull_proto::runtime::v1::runtime_service_client::RuntimeServiceClient::new(channel);
    let listed = p2
        .rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(listed.len(), 5);
    for (id, c, ip, _) in &pods {
        let s = pod_state(&mut p2, id).await;
        assert_eq!(s.state, PodSandboxState::SandboxReady as i32, "{id}");
        assert_eq!(&s.network.expect("net").ip, ip);
        let cs = container_state(&mut p2, c).await;
        if pods[0].1 == *c {
            assert_eq!(cs.state, ContainerState::ContainerExited as i32);
            assert_eq!(cs.exit_code, 7, "the exit during the downtime is reported");
        } else {
            assert_eq!(cs.state, ContainerState::ContainerRunning as i32);
        }
    }
    // Logs went on while hulld was down, and go on.
    let during = {
        let n = std::fs::read_to_string(p2.logs.path().join("keep1/main/0.log"))
            .unwrap_or_default()
            .lines()
            .count();
        assert!(n > before + 5, "{before} -> {n} lines");
        n
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = std::fs::read_to_string(p2.logs.path().join("keep1/main/0.log"))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(after > during);
    let (out, _, _) = exec(&mut p2, &pods[1].1, &["/bin/busybox", "echo", "still"]).await;
    assert_eq!(out, "still\n");
    remove_all(&mut p2).await;
    assert_nothing_left(&p2);
}

#[tokio::test(flavor = "multi_thread")]
async fn security_contexts_hold() {
    use hull_proto::runtime::v1::{
        security_profile::ProfileType, Capability, Int64Value, SecurityProfile,
    };
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let pod = p.pod("secure");
    let pod_id = run_pod(&mut p, pod.clone()).await;
    let sleeper = ["/bin/busybox", "sleep", "1000"];
    let with =
        |p: &Pods,
         name: &str,
         f: &dyn Fn(&mut hull_proto::runtime::v1::LinuxContainerSecurityContext)| {
            let mut c = p.container(name, &sleeper);
            if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                f(sc);
            }
            c
        };
    let c = with(&p, "uid", &|sc| {
        sc.run_as_user = Some(Int64Value { value: 1000 })
    });
    let uid = run_container(&mut p, &pod_id, &pod, c).await;
    assert_eq!(
        exec(&mut p, &uid, &["/bin/busybox", "id", "-u"]).await.0,
        "1000\n"
    );
    let c = with(&p, "named", &|sc| sc.run_as_username = "app".into());
    let named = run_container(&mut p, &pod_id, &pod, c).await;
    let id = exec(&mut p, &named, &["/bin/busybox", "id"]).await.0;
    assert!(id.starts_with("uid=1000(app) gid=1000(app)"), "{id}");
    let c = with(&p, "ro", &|sc| sc.readonly_rootfs = true);
    let ro = run_container(&mut p, &pod_id, &pod, c).await;
    let (_, err, code) = exec(&mut p, &ro, &["/bin/busybox", "touch", "/file"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let c = with(&p, "nocaps", &|sc| {
        sc.capabilities = Some(Capability {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        sc.no_new_privs = true;
    });
    let nocaps = run_container(&mut p, &pod_id, &pod, c).await;
    let status = exec(
        &mut p,
        &nocaps,
        &["/bin/busybox", "cat", "/proc/self/status"],
    )
    .await
    .0;
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let c = with(&p, "plain", &|_| {});
    let plain = run_container(&mut p, &pod_id, &pod, c).await;
    let status = exec(
        &mut p,
        &plain,
        &["/bin/busybox", "cat", "/proc/self/status"],
    )
    .await
    .0;
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    assert!(!status.contains("CapEff:\t0000000000000000"), "{status}");
    let (_, _, code) = exec(&mut p, &plain, &["/bin/busybox", "test", "-e", "/dev/kmsg"]).await;
    assert_ne!(code, 0, "an unprivileged container sees no host devices");
    let c = with(&p, "priv", &|sc| sc.privileged = true);
    let privileged = run_container(&mut p, &pod_id, &pod, c).await;
    let (_, _, code) = exec(
        &mut p,
        &privileged,
        &["/bin/busybox", "test", "-c", "/dev/kmsg"],
    )
    .await;
    assert_eq!(code, 0, "a privileged container sees the host's devices");
    // A Localhost seccomp profile refusing mkdir.
    let profile = p.scratch().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .expect("profile");
    let path = profile.display().to_string();
    let c = with(&p, "seccomp", &|sc| {
        sc.seccomp = Some(SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: path.clone(),
        })
    });
    let sec = run_container(&mut p, &pod_id, &pod, c).await;
    let (_, err, code) = exec(&mut p, &sec, &["/bin/busybox", "mkdir", "/tmp/d"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not permitted"), "{err}");
    assert_eq!(
        exec(&mut p, &plain, &["/bin/busybox", "mkdir", "/tmp/d"])
            .await
            .2,
        0
    );
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_codes_the_kubelet_expects_and_leaks_nothing() {
    use tonic::Code;
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let unknown = "0".repeat(64);
    assert_eq!(
        code(
            p.rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: unknown.clone(),
                verbose: false
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            p.rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: unknown.clone()
            })
            .await
        ),
        Code::NotFound
    );
    // Removing what is not there succeeds, as the kubelet retries removals.
    assert_eq!(
        code(
            p.rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: unknown.clone()
            })
            .await
        ),
        Code::Ok
    );
    for c in [
        code(
            p.rt.container_status(ContainerStatusRequest {
                container_id: unknown.clone(),
                verbose: false,
            })
            .await,
        ),
        code(
            p.rt.start_container(StartContainerRequest {
                container_id: unknown.clone(),
            })
            .await,
        ),
        code(
            p.rt.stop_container(StopContainerRequest {
                container_id: unknown.clone(),
                timeout: 0,
            })
            .await,
        ),
        code(
            p.rt.exec_sync(ExecSyncRequest {
                container_id: unknown.clone(),
                cmd: vec!["true".into()],
                timeout: 1,
            })
            .await,
        ),
    ] {
        assert_eq!(c, Code::NotFound);
    }
    let pod = p.pod("bad");
    let container = p.container("c", &["/bin/busybox", "sleep", "1000"]);
    assert_eq!(
        code(
            p.rt.create_container(CreateContainerRequest {
                pod_sandbox_id: unknown.clone(),
                config: Some(container.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await
        ),
        Code::NotFound
    );
    let pod_id = run_pod(&mut p, pod.clone()).await;
    // The same pod (name, namespace, uid, attempt) twice.
    let e =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("name taken");
    assert_eq!(e.code(), Code::AlreadyExists);
    let mut missing = container.clone();
    missing.image.as_mut().expect("image").image = format!("{}/pods/none:1", p.registry.host);
    assert_eq!(
        code(
            p.rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(missing),
                sandbox_config: Some(pod.clone()),
            })
            .await
        ),
        Code::NotFound
    );
    let mut nameless = container.clone();
    nameless.metadata = None;
    assert_eq!(
        code(
            p.rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(nameless),
                sandbox_config: Some(pod.clone()),
            })
            .await
        ),
        Code::InvalidArgument
    );
    // The failed creates released the name.
    let c = run_container(&mut p, &pod_id, &pod, container.clone()).await;
    assert_eq!(
        code(
            p.rt.start_container(StartContainerRequest {
                container_id: c.clone()
            })
            .await
        ),
        Code::FailedPrecondition
    );
    p.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop");
    let mut again = container.clone();
    again.metadata.as_mut().expect("meta").attempt = 1;
    assert_eq!(
        code(
            p.rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(again),
                sandbox_config: Some(pod.clone()),
            })
            .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            p.rt.exec_sync(ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec!["true".into()],
                timeout: 1
            })
            .await
        ),
        Code::FailedPrecondition
    );
    remove_all(&mut p).await;

    // A broken CNI config, then a plugin that fails: the pod is refused
    // and nothing of it stays.
    let conf = p.net_d.join("10-pods.conflist");
    let good = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(&conf, "{ not json").expect("break");
    let e =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(p.pod("nonet")),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("no network");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let failing = good.replace("\"portmap\"", "\"hull-no-such-plugin\"");
    std::fs::write(&conf, failing).expect("write");
    let e =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(p.pod("nonet")),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("plugin missing");
    assert!(e.message().contains("hull-no-such-plugin"), "{e}");
    assert_nothing_left(&p);
    std::fs::write(&conf, good).expect("restore");
    // The failed attempts released the pod's name.
    let nonet = p.pod("nonet");
    let id = run_pod(&mut p, nonet).await;
    assert_eq!(
        pod_state(&mut p, &id).await.state,
        PodSandboxState::SandboxReady as i32
    );
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_pods_come_and_go_without_leaks() {
    if !have_tools() {
        return;
    }
    let p = Pods::start("").await;
    let p = std::sync::Arc::new(tokio::sync::Mutex::new(p));
    let mut ids = Vec::new();
    for batch in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let (mut rt, pod, container) = {
                    let g = p.lock().await;
                    let name = format!("many{}", batch * 10 + i);
                    (
                        g.rt.clone(),
                        g.pod(&name),
                        g.container("c", &["/bin/busybox", "sleep", "1000"]),
                    )
                };
                let id = rt
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(pod.clone()),
                        runtime_handler: String::new(),
                    })
                    .await
                    .expect("run pod")
                    .into_inner()
                    .pod_sandbox_id;
                let c = rt
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: id.clone(),
                        config: Some(container),
                        sandbox_config: Some(pod),
                    })
                    .await
                    .expect("create")
                    .into_inner()
                    .container_id;
                rt.start_container(StartContainerRequest { container_id: c })
                    .await
                    .expect("start");
                id
            }));
        }
        for t in tasks {
            ids.push(t.await.expect("pod task"));
        }
    }
    let mut g = p.lock().await;
    let listed =
        g.rt.list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("list")
            .into_inner()
            .items;
    assert_eq!(listed.len(), 100);
    let ips: std::collections::BTreeSet<String> = {
        let mut s = std::collections::BTreeSet::new();
        for id in &ids {
            s.insert(pod_state(&mut g, id).await.network.expect("net").ip);
        }
        s
    };
    assert_eq!(ips.len(), 100, "every pod has its own address");
    assert_eq!(g.allocations().len(), 100);
    for id in ids {
        let mut rt = g.rt.clone();
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("stop");
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .expect("remove");
    }
    assert_nothing_left(&g);
    let parent = format!("/sys/fs/cgroup/memory{}", g.cgroup_parent("many0"));
    assert!(
        !std::path::Path::new(&parent).exists(),
        "pod cgroups removed"
    );
}

/// The URL's port and path.
fn split_url(url: &str) -> (u16, String) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').expect("path");
    let port = host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    (port, format!("/{path}"))
}

/// Sends `head` (an HTTP request's head) to the streaming server; returns
/// its answer's status line.
fn raw_request(port: u16, head: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(head.as_bytes()).expect("send");
    let mut out = vec![0u8; 4096];
    let n = s.read(&mut out).unwrap_or(0);
    String::from_utf8_lossy(&out[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Runs a streaming client with `input` on its stdin; returns (stdout,
/// stderr, success).
fn run_client(cmd: &mut std::process::Command, input: &str) -> (String, String, bool) {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("client stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("client");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_exec_attach_and_port_forward_as_kubectl_speaks_them() {
    use hull_proto::runtime::v1::{AttachRequest, ExecRequest, PortForwardRequest};
    if !have_tools() {
        return;
    }
    let (Some(spdy), Some((python, kubews))) =
        (hull_tests::cri::kubestream(), hull_tests::cri::kubews())
    else {
        panic!("the streaming clients need golang-go, golang-github-docker-spdystream-dev and python3-kubernetes (tests/run.sh installs them)");
    };
    let mut p = Pods::start("").await;
    let pod = p.pod("stream");
    let pod_id = run_pod(&mut p, pod.clone()).await;
    let web = p.container(
        "web",
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let web = run_container(&mut p, &pod_id, &pod, web).await;
    let mut echo = p.container(
        "echo",
        &[
            "/bin/sh",
            "-c",
            "while read l; do echo \"echo:$l\"; done; echo stdin-closed",
        ],
    );
    echo.stdin = true;
    let echo = run_container(&mut p, &pod_id, &pod, echo).await;
    let exec_url = |p: &mut Pods, req: ExecRequest| {
        let mut rt = p.rt.clone();
        async move { rt.exec(req).await.expect("exec url").into_inner().url }
    };
    let cmd = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    // SPDY, as kubectl exec -i: stdin in, both streams out, the exit code
    // in the status.
    let url = exec_url(
        &mut p,
        ExecRequest {
            container_id: web.clone(),
            cmd: cmd(&["sh", "-c", "tr a-z A-Z; echo done >&2; exit 3"]),
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        },
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let status_file = p.scratch().join("status");
    let (out, err, ok) = run_client(
        std::process::Command::new(&spdy)
            .args(["exec", &url, "-stdin", "-stderr", "-status"])
            .arg(&status_file),
        "hello\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "HELLO\n");
    assert_eq!(err, "done\n");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).expect("status")).expect("json");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
    // A URL is good once.
    let (port, path) = split_url(&url);
    let again = raw_request(
        port,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"),
    );
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");

    // SPDY with a terminal, as kubectl exec -it: the size the client sets
    // reaches the terminal.
    let url = exec_url(
        &mut p,
        ExecRequest {
            container_id: web.clone(),
            cmd: cmd(&[
                "sh",
                "-c",
                "while [ \"$(stty size)\" != '45 123' ]; do sleep 0.1; done; read x; echo \"got $x on $(tty)\"",
            ]),
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        },
    )
    .await;
    let (out, err, ok) = run_client(
        std::process::Command::new(&spdy)
            .args(["exec", &url, "-stdin", "-tty", "123x45", "-status"])
            .arg(&status_file),
        "hi\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("got hi on /dev/pts/"), "{out:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).expect("status")).expect("json");
    assert_eq!(status["status"], "Success", "{status}");

    // SPDY attach, twice: what the client types reaches the container and
    // its answer comes back; the first client leaving does not close the
    // container's stdin.
    for word in ["one", "two"] {
        let url =
            p.rt.attach(AttachRequest {
                container_id: echo.clone(),
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .expect("attach url")
            .into_inner()
            .url;
        let (out, err, ok) = run_client(
            std::process::Command::new(&spdy).args([
                "attach",
                &url,
                "-stdin",
                "-stderr",
                "-expect",
                &format!("echo:{word}"),
            ]),
            &format!("{word}\n"),
        );
        let log = std::fs::read_to_string(format!("{}/echo/0.log", pod.log_directory))
            .unwrap_or_default();
        assert!(ok, "{err}; the container's log: {log}");
        assert!(out.contains(&format!("echo:{word}\n")), "{out:?}");
    }
    assert_eq!(
        container_state(&mut p, &echo).await.state,
        ContainerState::ContainerRunning as i32,
        "attach clients leaving keep the container's stdin open"
    );

    // SPDY port forward, as kubectl port-forward: the pod's own port 80,
    // reached inside its network namespace.
    let pf_url = |p: &mut Pods| {
        let mut rt = p.rt.clone();
        let pod_id = pod_id.clone();
        async move {
            rt.port_forward(PortForwardRequest {
                pod_sandbox_id: pod_id,
                port: vec![80],
            })
            .await
            .expect("port forward url")
            .into_inner()
            .url
        }
    };
    let url = pf_url(&mut p).await;
    let (out, err, ok) = run_client(
        std::process::Command::new(&spdy).args(["portforward", &url, "80"]),
        "GET /hello HTTP/1.0\r\n\r\n",
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert!(out.ends_with("hello from the pod\n"), "{out:?}");
    // A port nothing listens on: the error stream says so.
    let url = pf_url(&mut p).await;
    let (_, err, ok) = run_client(
        std::process::Command::new(&spdy).args(["portforward", &url, "81"]),
        "",
    );
    assert!(!ok);
    assert!(err.contains("error forwarding port 81"), "{err}");

    // WebSocket, as the Kubernetes Python client speaks it.
    let url = exec_url(
        &mut p,
        ExecRequest {
            container_id: web.clone(),
            cmd: cmd(&["sh", "-c", "read x; echo \"ws $x\"; echo warn >&2; exit 4"]),
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        },
    )
    .await;
    let (out, err, ok) = run_client(
        std::process::Command::new(&python)
            .arg(&kubews)
            .args(["exec", &url, "hey\n"]),
        "",
    );
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(got["stdout"], "ws hey\n", "{got}");
    assert_eq!(got["stderr"], "warn\n", "{got}");
    assert_eq!(got["code"], 4, "{got}");
    let url = pf_url(&mut p).await;
    let (out, err, ok) = run_client(
        std::process::Command::new(&python).arg(&kubews).args([
            "portforward",
            &url,
            "80",
            "GET /hello HTTP/1.0\r\n\r\n",
        ]),
        "",
    );
    assert!(ok, "{err}");
    assert!(out.ends_with("hello from the pod\n"), "{out:?}");

    // Requests that do not upgrade, or offer no protocol in common.
    let url = exec_url(
        &mut p,
        ExecRequest {
            container_id: web.clone(),
            cmd: cmd(&["true"]),
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    let (port, path) = split_url(&url);
    let plain = http_get(port, &path);
    assert!(plain.starts_with("HTTP/1.0 400"), "{plain}");
    let old = raw_request(
        port,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n\r\n"),
    );
    assert!(old.starts_with("HTTP/1.1 403"), "{old}");
    let e =
        p.rt.exec(ExecRequest {
            container_id: "0".repeat(64),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("unknown container");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e =
        p.rt.attach(AttachRequest {
            container_id: web.clone(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("no stdin");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    // Nothing of the sessions is left in the pod.
    let (out, _, _) = exec(&mut p, &web, &["/bin/busybox", "ps", "-o", "args"]).await;
    assert!(!out.contains("stty") && !out.contains("tr a-z"), "{out}");
    let execs = std::fs::read_dir(p.d.dir().join("state/cri/exec"))
        .map(|e| e.count())
        .unwrap_or(0);
    assert_eq!(execs, 0, "exec FIFOs left");
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_handlers_pick_the_oci_runtime() {
    use hull_proto::runtime::v1::StatusRequest;
    if !have_tools() {
        return;
    }
    if !std::path::Path::new("/usr/bin/crun").exists() {
        panic!("needs crun (tests/run.sh installs it)");
    }
    let runc_path = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("runc installed");
    let mut p = Pods::start(&format!(
        "[cri.runtimes]\nrunc = \"runc\"\ncrun = \"crun\"\nplain = \"runc\"\nbypath = \"{runc_path}\"\n"
    ))
    .await;
    let handlers: Vec<String> =
        p.rt.status(StatusRequest { verbose: false })
            .await
            .expect("status")
            .into_inner()
            .runtime_handlers
            .into_iter()
            .map(|h| h.name)
            .collect();
    assert_eq!(handlers, ["", "bypath", "crun", "plain", "runc"]);
    let pod = p.pod("plain");
    let pod_id =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "plain".into(),
        })
        .await
        .expect("run pod with handler plain")
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(pod_state(&mut p, &pod_id).await.runtime_handler, "plain");
    let cc = p.container("c", &["/bin/busybox", "sleep", "1000"]);
    let c = run_container(&mut p, &pod_id, &pod, cc).await;
    let (out, _, code) = exec(&mut p, &c, &["/bin/busybox", "echo", "hi"]).await;
    assert_eq!((out.as_str(), code), ("hi\n", 0));

    // A handler naming another runtime binary (here runc by its path) gets
    // the built-in pause to run itself, rather than the shim starting it.
    let pod = p.pod("bypath");
    let bypath =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "bypath".into(),
        })
        .await
        .expect("run pod with handler bypath")
        .into_inner()
        .pod_sandbox_id;
    let list = std::process::Command::new("runc")
        .arg("--root")
        .arg(p.d.dir().join("runc/k8s.io"))
        .arg("list")
        .output()
        .expect("runc list");
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains(&bypath), "{list}");
    assert!(
        !list.contains(&pod_id),
        "the default runtime's pause: {list}"
    );
    let cc = p.container("c", &["/bin/busybox", "sleep", "1000"]);
    let c = run_container(&mut p, &bypath, &pod, cc).await;
    let (out, _, code) = exec(&mut p, &c, &["/bin/busybox", "hostname"]).await;
    assert_eq!((out.as_str(), code), ("bypath\n", 0));

    // The crun handler's pods run with crun: listed in crun's state under
    // the root the shim gives the runtime, or, where crun cannot run
    // (it refuses hybrid cgroup hosts), failing with crun's own error.
    let pod = p.pod("oncrun");
    let r =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "crun".into(),
        })
        .await;
    match r {
        Ok(r) => {
            let pod_id = r.into_inner().pod_sandbox_id;
            let roots: Vec<std::path::PathBuf> = walk_dirs(p.d.dir(), 3)
                .into_iter()
                .filter(|d| d.ends_with("runc/k8s.io"))
                .collect();
            assert_eq!(roots.len(), 1, "{roots:?}");
            let list = std::process::Command::new("crun")
                .arg("--root")
                .arg(&roots[0])
                .arg("list")
                .output()
                .expect("crun list");
            let list = String::from_utf8_lossy(&list.stdout).into_owned();
            assert!(list.contains(&pod_id), "{list}");
        }
        Err(e) => {
            assert!(e.message().contains("crun run"), "{}", e.message());
            let pods =
                p.rt.list_pod_sandbox(ListPodSandboxRequest::default())
                    .await
                    .expect("list")
                    .into_inner()
                    .items;
            assert_eq!(pods.len(), 2, "the failed pod is undone");
        }
    }
    let e =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(p.pod("nohandler")),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(e.code(), tonic::Code::NotFound);
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

/// Directories under `root`, `depth` levels down at most.
fn walk_dirs(root: &std::path::Path, depth: usize) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk_dirs(&p, depth - 1));
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_log_reopening_and_stats_as_the_kubelet_uses_them() {
    use hull_proto::runtime::v1::{
        ContainerStatsFilter, ContainerStatsRequest, LinuxContainerResources,
        ListContainerStatsRequest, ListPodSandboxStatsRequest, PodSandboxStatsRequest,
        ReopenContainerLogRequest, UpdateContainerResourcesRequest,
    };
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let pod = p.pod("tuned");
    let pod_id = run_pod(&mut p, pod.clone()).await;
    let cc = p.container(
        "ticker",
        &[
            "/bin/sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
        ],
    );
    let c = run_container(&mut p, &pod_id, &pod, cc).await;

    // New limits reach the running container's cgroup.
    p.rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: c.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update resources");
    let parent = pod.linux.as_ref().expect("linux").cgroup_parent.clone();
    let v1 = format!("/sys/fs/cgroup/memory{parent}/{c}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup{parent}/{c}/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .expect("the container's memory limit");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    if let Ok(shares) =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{parent}/{c}/cpu.shares"))
    {
        assert_eq!(shares.trim(), "512");
    }

    // The kubelet rotates the log: moves it away, asks for a new one, and
    // the container's lines go there from then on.
    let log = std::path::PathBuf::from(format!("{}/ticker/0.log", pod.log_directory));
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    p.rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: c.clone(),
    })
    .await
    .expect("reopen log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|l| l.contains(" stdout F tick ")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lines in the new log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = std::fs::metadata(&rotated).expect("rotated").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        std::fs::metadata(&rotated).expect("rotated").len(),
        before,
        "the old file is left alone"
    );

    // Stats from the cgroups and the writable layer.
    let s =
        p.rt.container_stats(ContainerStatsRequest {
            container_id: c.clone(),
        })
        .await
        .expect("container stats")
        .into_inner()
        .stats
        .expect("stats");
    let cpu = s
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .expect("cpu usage");
    assert!(cpu > 0);
    let mem = s
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .expect("working set");
    assert!(mem > 0 && mem <= 64 << 20, "{mem}");
    assert!(s.writable_layer.is_some(), "writable layer usage");
    let listed =
        p.rt.list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("list container stats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].attributes.as_ref().map(|a| a.id.as_str()),
        Some(c.as_str())
    );
    let ps =
        p.rt.pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .expect("stats");
    let linux = ps.linux.expect("linux stats");
    assert!(linux.cpu.is_some() && linux.memory.is_some());
    assert_eq!(linux.containers.len(), 1);
    let pods =
        p.rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            .await
            .expect("list pod stats")
            .into_inner()
            .stats;
    assert!(pods
        .iter()
        .any(|s| s.attributes.as_ref().map(|a| a.id.as_str()) == Some(pod_id.as_str())));
    // Unknown ids: NotFound.
    let e =
        p.rt.container_stats(ContainerStatsRequest {
            container_id: "f".repeat(64),
        })
        .await
        .expect_err("unknown container");
    assert_eq!(e.code(), tonic::Code::NotFound);
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_its_client_gave_up_on_releases_its_name() {
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let pod = p.pod("hasty");
    // The kubelet's deadline passes while the pod is being made.
    let mut req = tonic::Request::new(RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: String::new(),
    });
    req.set_timeout(Duration::from_millis(5));
    let e = p.rt.run_pod_sandbox(req).await.expect_err("deadline");
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e}"
    );
    // Its retry gets the name once the abandoned pod is undone; never
    // "name is reserved" for good.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pod_id = loop {
        match p
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            })
            .await
        {
            Ok(r) => break r.into_inner().pod_sandbox_id,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the name stayed taken: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The same for a container.
    let cc = p.container("c", &["/bin/busybox", "sleep", "1000"]);
    let mut req = tonic::Request::new(CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(cc.clone()),
        sandbox_config: Some(pod.clone()),
    });
    req.set_timeout(Duration::from_millis(1));
    let _ = p.rt.create_container(req).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match p
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(cc.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the name stayed taken: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let pods =
        p.rt.list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("list")
            .into_inner()
            .items;
    assert_eq!(pods.len(), 1, "one pod of that name");
    let containers =
        p.rt.list_containers(ListContainersRequest::default())
            .await
            .expect("list")
            .into_inner()
            .containers;
    assert_eq!(containers.len(), 1, "one container of that name");
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_sandbox_image_runs_as_the_pause() {
    use hull_proto::runtime::v1::{ImageSpec, PullImageRequest};
    use hull_tests::image::{busybox_layer, image_with_cmd, write_oci_archive};
    if !have_tools() {
        return;
    }
    let mut p = Pods::start_with(|host| format!("sandbox_image = \"{host}/pods/pause:1\"\n")).await;
    let pod = p.pod("imaged");
    // Not pulled yet: the pod cannot start, and says why.
    let e =
        p.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("no sandbox image yet");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert!(e.message().contains("pods/pause:1"), "{}", e.message());
    let archive = p.scratch().join("pause.tar");
    write_oci_archive(
        &archive,
        &image_with_cmd(
            busybox_layer(&Default::default()),
            &["/bin/busybox", "sleep", "7777"],
        ),
        "pause",
    );
    p.registry.seed(&archive, "pods/pause", "1", None);
    p.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: format!("{}/pods/pause:1", p.registry.host),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull the sandbox image");
    let pod_id = run_pod(&mut p, pod.clone()).await;
    // The image's command is the pod's pause, in its own root.
    let shims = std::process::Command::new("pgrep")
        .args(["-f", "^/bin/busybox sleep 7777$"])
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&shims.stdout).into_owned();
    assert_eq!(pids.lines().count(), 1, "{pids:?}");
    let cc = p.container("c", &["/bin/busybox", "sleep", "1000"]);
    let c = run_container(&mut p, &pod_id, &pod, cc).await;
    let (host, _, _) = exec(&mut p, &c, &["/bin/busybox", "hostname"]).await;
    assert_eq!(host.trim(), "imaged");
    assert_eq!(
        pod_state(&mut p, &pod_id).await.state,
        PodSandboxState::SandboxReady as i32
    );
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

/// Containers whose command ends at once (a job's `true`, a crash at
/// start) are reported EXITED with their own code, however soon the exit
/// comes after the start: the kubelet restarts a container only when it
/// sees it exit.
#[tokio::test(flavor = "multi_thread")]
async fn containers_that_exit_at_once_are_seen_exiting() {
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let pod = p.pod("quick");
    let pod_id = run_pod(&mut p, pod.clone()).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let cc = p.container(
            &format!("job{i}"),
            &["/bin/sh", "-c", &format!("exit {}", 10 + i)],
        );
        ids.push(run_container(&mut p, &pod_id, &pod, cc).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let s = loop {
            let s = container_state(&mut p, id).await;
            if s.state == ContainerState::ContainerExited as i32 {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job{i} still {:?} after 15 s",
                ContainerState::try_from(s.state)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(s.exit_code, 10 + i as i32, "job{i} {id}");
        assert_eq!(s.reason, "Error", "job{i}");
        assert!(s.started_at > 0, "job{i} has no start time");
        assert!(
            s.finished_at >= s.started_at,
            "job{i} ended before it started"
        );
    }
    remove_all(&mut p).await;
    assert_nothing_left(&p);
}

/// The pid of task `id` as `ctr -n k8s.io tasks ls` shows it.
fn task_pid(p: &Pods, id: &str) -> (u32, String) {
    let tasks = p.d.ctr_ok(&["tasks", "ls"]);
    let line = tasks
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("task {id} in {tasks}"));
    let mut cols = line.split_whitespace().skip(1);
    let pid = cols.next().and_then(|p| p.parse().ok()).expect("pid");
    (pid, cols.next().unwrap_or_default().to_owned())
}

fn ns_link(pid: u32, ns: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("namespace link")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_pause_holds_the_pods_namespaces_with_no_privileges() {
    use std::os::unix::fs::MetadataExt;
    if !have_tools() {
        return;
    }
    let mut p = Pods::start("").await;
    let mut pod = p.pod("held");
    pod.hostname = "held-host".into();
    if let Some(l) = pod.linux.as_mut() {
        l.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
    }
    let pod_id = run_pod(&mut p, pod.clone()).await;
    let (pid, status) = task_pid(&p, &pod_id);
    assert_eq!(status, "RUNNING");
    // It runs the pause, as no runtime's container: the shim started it.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, b"/pause\0");
    let runc = std::process::Command::new("runc")
        .arg("--root")
        .arg(p.d.dir().join("runc/k8s.io"))
        .arg("list")
        .output()
        .expect("runc list");
    assert!(
        !String::from_utf8_lossy(&runc.stdout).contains(&pod_id),
        "{}",
        String::from_utf8_lossy(&runc.stdout)
    );
    // No capability in any set, no new privileges.
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            proc_status.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {proc_status}"
        );
    }
    assert!(proc_status.contains("NoNewPrivs:\t1"), "{proc_status}");
    // Its own mount, PID, IPC and UTS namespaces; the pod's network one.
    for ns in ["mnt", "pid", "ipc", "uts"] {
        assert_ne!(ns_link(pid, ns), ns_link(std::process::id(), ns), "{ns}");
    }
    let netns = p.d.dir().join("state/cri/netns").join(&pod_id);
    let ino = std::fs::metadata(&netns).expect("pod netns").ino();
    assert_eq!(
        ns_link(pid, "net").display().to_string(),
        format!("net:[{ino}]")
    );
    // Its root holds the pause (and its libraries) alone, read-only.
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let entries: Vec<String> = std::fs::read_dir(&root)
        .expect("root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.contains(&"pause".to_owned()), "{entries:?}");
    for absent in ["etc", "bin", "proc", "root", "tmp"] {
        assert!(!entries.contains(&absent.to_owned()), "{entries:?}");
    }
    let write = std::fs::write(root.join("x"), "x").expect_err("a read-only root");
    assert_eq!(
        write.raw_os_error(),
        Some(nix::errno::Errno::EROFS as i32),
        "{write}"
    );
    // In the pod's cgroup.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let leaf = format!("{}/{pod_id}", p.cgroup_parent("held"));
    assert!(cgroup.contains(&leaf), "{leaf} in {cgroup}");
    // A container of the pod sees the pod's hostname and sysctl.
    let c = p.container("look", &["/bin/busybox", "sleep", "1000"]);
    let look = run_container(&mut p, &pod_id, &pod, c).await;
    assert_eq!(
        exec(&mut p, &look, &["/bin/busybox", "hostname"]).await.0,
        "held-host\n"
    );
    assert_eq!(
        exec(
            &mut p,
            &look,
            &[
                "/bin/busybox",
                "cat",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start"
            ]
        )
        .await
        .0,
        "0\n"
    );
    // Pause and resume through ctr freeze and thaw its cgroup.
    p.d.ctr_ok(&["tasks", "pause", &pod_id]);
    assert_eq!(task_pid(&p, &pod_id).1, "PAUSED");
    p.d.ctr_ok(&["tasks", "resume", &pod_id]);
    assert_eq!(task_pid(&p, &pod_id).1, "RUNNING");
    // Stopping the pod ends the pause; removing it removes its cgroup.
    p.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop pod");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default() != cmdline,
        "the pause ended"
    );
    remove_all(&mut p).await;
    let dirs: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup roots")
        .flatten()
        .map(|h| h.path().join(leaf.trim_start_matches('/')))
        .filter(|d| d.exists())
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
    assert_nothing_left(&p);
}
