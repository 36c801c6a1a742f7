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
    let cgroup = format!(
        "/sys/fs/cgroup/memory/hull-test-pods/web-{}",
        std::process::id()
    );
    assert!(!std::path::Path::new(&cgroup).exists(), "{cgroup} removed");
}
