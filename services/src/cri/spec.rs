//! The OCI runtime specs of pod sandboxes and their containers, from
//! containerd's default spec (hull-oci, oci-spec's types) with what the
//! CRI configs ask applied, then checked by decoding into oci-spec's
//! `Spec` again.
//!
//! The namespaces follow `NamespaceOption`: a container joins its pod's
//! network, IPC and UTS namespaces (and PID namespace in POD mode); NODE
//! mode leaves a namespace out (the host's). Containers share the pod's
//! `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` and `/dev/shm`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hull_oci::oci_spec::image::ImageConfiguration;
use hull_oci::oci_spec::runtime::Spec;
use hull_oci::spec::ResolvedUser;
use hull_proto::errdefs::Kind;
use hull_proto::runtime::v1::{
    ContainerConfig, LinuxContainerResources, MountPropagation, NamespaceMode, PodSandboxConfig,
    SecurityProfile,
};
use serde_json::{json, Value};
use tonic::Status;

use super::pause::PAUSE_PATH;
use super::status_of;

/// `io.kubernetes.cri.container-type`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// `io.kubernetes.cri.sandbox-id`.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Every capability a privileged container gets.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities hulld itself may hand on (its bounding set; this
/// list is in capability-number order): what "all" means on this host.
fn host_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| (*c).to_owned())
        .collect()
}

fn invalid(msg: impl Into<String>) -> Status {
    status_of(Kind::InvalidArgument, msg)
}

/// containerd's default spec for `id`, as JSON to change.
fn base(id: &str) -> Result<Value, Status> {
    let spec = hull_oci::spec::default_spec(super::NAMESPACE, id)
        .map_err(|e| status_of(Kind::Unknown, format!("default spec: {e}")))?;
    let mut v =
        serde_json::to_value(&spec).map_err(|e| status_of(Kind::Unknown, format!("spec: {e}")))?;
    // oci-spec's default names a hostname; a container joining its pod's
    // UTS namespace would set it there.
    if let Some(o) = v.as_object_mut() {
        o.remove("hostname");
    }
    Ok(v)
}

/// The finished spec: decoded as oci-spec's `Spec` (so a value of the
/// wrong shape fails here, not in runc) and encoded.
fn finish(spec: Value) -> Result<Vec<u8>, Status> {
    let typed: Spec = serde_json::from_value(spec)
        .map_err(|e| status_of(Kind::Unknown, format!("runtime spec does not hold: {e}")))?;
    serde_json::to_vec(&typed).map_err(|e| status_of(Kind::Unknown, format!("spec: {e}")))
}

fn mode(m: i32) -> NamespaceMode {
    NamespaceMode::try_from(m).unwrap_or(NamespaceMode::Pod)
}

/// The namespace modes a pod asks for: (network, pid, ipc).
pub fn pod_modes(config: &PodSandboxConfig) -> (NamespaceMode, NamespaceMode, NamespaceMode) {
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    (mode(ns.network), mode(ns.pid), mode(ns.ipc))
}

/// The cgroup of `id` under the pod's parent (cgroupfs driver).
pub fn cgroup_path(config: &PodSandboxConfig, id: &str) -> String {
    let parent = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.trim_end_matches('/'))
        .unwrap_or("");
    if parent.is_empty() {
        format!("/{}/{id}", super::NAMESPACE)
    } else if parent.starts_with('/') {
        format!("{parent}/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

fn bind(dest: &str, source: &Path, ro: bool) -> Value {
    json!({
        "destination": dest,
        "type": "bind",
        "source": source,
        "options": ["rbind", "rprivate", if ro { "ro" } else { "rw" }, "nosuid", "nodev"],
    })
}

fn set_namespaces(spec: &mut Value, list: Vec<Value>) {
    spec["linux"]["namespaces"] = Value::Array(list);
}

fn ns(kind: &str, path: Option<String>) -> Value {
    match path {
        Some(p) => json!({"type": kind, "path": p}),
        None => json!({"type": kind}),
    }
}

/// The oom_score_adj asked for, no lower than hulld's own: lowering it
/// needs CAP_SYS_RESOURCE, which the daemon may lack.
pub fn clamp_oom(wanted: i64, floor: i32) -> i32 {
    let w = wanted.clamp(-1000, 1000) as i32;
    w.max(floor)
}

/// hulld's own oom_score_adj.
pub fn own_oom_score() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Files of the pod every container mounts.
#[derive(Debug, Clone)]
pub struct PodFiles {
    /// Holds hostname, hosts, resolv.conf.
    pub dir: PathBuf,
    /// The pod's /dev/shm (None: the host's).
    pub shm: Option<PathBuf>,
}

/// The process that holds a pod's namespaces.
#[derive(Debug)]
pub enum Pause<'a> {
    /// hull's own: an empty root with the binary (and the host libraries
    /// it needs) bind-mounted read-only.
    BuiltIn {
        /// The empty root.
        rootfs: &'a Path,
        /// The pause binary.
        binary: &'a Path,
        /// What it needs.
        libraries: &'a [PathBuf],
        /// Whether the shim may start it itself rather than through the
        /// OCI runtime (the pod runs on the default runtime).
        by_shim: bool,
    },
    /// A configured sandbox image, its root a snapshot (`rootfs` in the
    /// bundle), run as its config says.
    Image(&'a ImageConfiguration),
}

/// What a sandbox's spec is made from.
#[derive(Debug)]
pub struct SandboxInput<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its config.
    pub config: &'a PodSandboxConfig,
    /// Its network namespace (None: the host's).
    pub netns: Option<&'a Path>,
    /// What the pod's first process is.
    pub pause: Pause<'a>,
    /// The pod's files.
    pub files: &'a PodFiles,
    /// The lowest oom_score_adj allowed.
    pub oom_floor: i32,
}

/// The sandbox's spec: the pause process in its namespaces.
///
/// # Errors
/// InvalidArgument for a config that cannot run.
pub fn sandbox(input: &SandboxInput<'_>) -> Result<Vec<u8>, Status> {
    let c = input.config;
    let mut spec = base(input.id)?;
    let (net, pid, ipc) = pod_modes(c);
    match &input.pause {
        Pause::BuiltIn { rootfs, .. } => {
            spec["root"] = json!({"path": rootfs, "readonly": true});
            spec["process"]["args"] = json!([PAUSE_PATH]);
        }
        Pause::Image(image) => {
            spec["root"] = json!({"path": "rootfs", "readonly": true});
            let args = arguments(&ContainerConfig::default(), image);
            if args.is_empty() {
                return Err(invalid("the sandbox image names no command"));
            }
            spec["process"]["args"] = json!(args);
        }
    }
    spec["process"]["cwd"] = json!("/");
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    if let Some(uid) = sc.and_then(|s| s.run_as_user.as_ref()) {
        spec["process"]["user"]["uid"] = json!(uid.value);
    }
    if let Some(gid) = sc.and_then(|s| s.run_as_group.as_ref()) {
        spec["process"]["user"]["gid"] = json!(gid.value);
    }
    spec["process"]["oomScoreAdj"] = json!(clamp_oom(-998, input.oom_floor));
    let mut namespaces = vec![ns("mount", None)];
    if pid != NamespaceMode::Node {
        namespaces.push(ns("pid", None));
    }
    if ipc != NamespaceMode::Node {
        namespaces.push(ns("ipc", None));
    }
    if net != NamespaceMode::Node {
        namespaces.push(ns("uts", None));
        let path = input
            .netns
            .ok_or_else(|| status_of(Kind::Unknown, "pod network namespace missing"))?;
        namespaces.push(ns("network", Some(path.display().to_string())));
        if !c.hostname.is_empty() {
            spec["hostname"] = json!(c.hostname);
        }
    }
    set_namespaces(&mut spec, namespaces);
    let mut mounts: Vec<Value> = spec["mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["destination"] != "/dev/shm")
        .collect();
    if let Pause::BuiltIn {
        binary, libraries, ..
    } = &input.pause
    {
        mounts.push(bind(PAUSE_PATH, binary, true));
        for lib in *libraries {
            mounts.push(bind(&lib.display().to_string(), lib, true));
        }
    }
    mounts.push(shm_mount(input.files, ipc));
    spec["mounts"] = Value::Array(mounts);
    if let Some(l) = &c.linux {
        if !l.sysctls.is_empty() {
            spec["linux"]["sysctl"] = json!(l.sysctls);
        }
    }
    spec["linux"]["cgroupsPath"] = json!(cgroup_path(c, input.id));
    let meta = c.metadata.clone().unwrap_or_default();
    let mut annotations = BTreeMap::new();
    annotations.insert(CONTAINER_TYPE.to_owned(), "sandbox".to_owned());
    annotations.insert(SANDBOX_ID.to_owned(), input.id.to_owned());
    annotations.insert("io.kubernetes.cri.sandbox-name".to_owned(), meta.name);
    annotations.insert(
        "io.kubernetes.cri.sandbox-namespace".to_owned(),
        meta.namespace,
    );
    annotations.insert("io.kubernetes.cri.sandbox-uid".to_owned(), meta.uid);
    annotations.insert(
        "io.kubernetes.cri.sandbox-log-directory".to_owned(),
        c.log_directory.clone(),
    );
    if matches!(input.pause, Pause::BuiltIn { by_shim: true, .. }) {
        // The shim may start this one itself rather than through runc.
        annotations.insert(
            hull_proto::headers::BUILTIN_PAUSE.to_owned(),
            "true".to_owned(),
        );
    }
    spec["annotations"] = json!(annotations);
    finish(spec)
}

fn shm_mount(files: &PodFiles, ipc: NamespaceMode) -> Value {
    match (&files.shm, ipc) {
        (Some(shm), m) if m != NamespaceMode::Node => bind("/dev/shm", shm, false),
        _ => bind("/dev/shm", Path::new("/dev/shm"), false),
    }
}

/// What a container's spec is made from.
#[derive(Debug)]
pub struct ContainerInput<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its config.
    pub config: &'a ContainerConfig,
    /// Its pod's id and config.
    pub sandbox_id: &'a str,
    /// Its pod's config.
    pub sandbox: &'a PodSandboxConfig,
    /// The pod's pause process.
    pub sandbox_pid: u32,
    /// The pod's network namespace (None: the host's).
    pub netns: Option<&'a Path>,
    /// The pod's files.
    pub files: &'a PodFiles,
    /// The image's config.
    pub image: &'a ImageConfiguration,
    /// The image's name as the client gave it.
    pub image_name: &'a str,
    /// The user it runs as.
    pub user: ResolvedUser,
    /// The pid namespace of the target container (TARGET mode).
    pub target_pid: Option<u32>,
    /// The lowest oom_score_adj allowed.
    pub oom_floor: i32,
}

/// The process arguments: the command replaces the image's entrypoint,
/// the args its command, as Kubernetes defines them.
pub fn arguments(config: &ContainerConfig, image: &ImageConfiguration) -> Vec<String> {
    let ic = image.config().clone().unwrap_or_default();
    let entrypoint = ic.entrypoint().clone().unwrap_or_default();
    let cmd = ic.cmd().clone().unwrap_or_default();
    if !config.command.is_empty() {
        config
            .command
            .iter()
            .chain(config.args.iter())
            .cloned()
            .collect()
    } else if !config.args.is_empty() {
        entrypoint.into_iter().chain(config.args.clone()).collect()
    } else {
        entrypoint.into_iter().chain(cmd).collect()
    }
}

fn capability_name(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The capability set after CRI's add and drop (`ALL` allowed in both).
pub fn capabilities(default: &[String], add: &[String], drop: &[String]) -> Vec<String> {
    let mut set: Vec<String> = if add.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
        host_capabilities()
    } else {
        let mut s = default.to_vec();
        for a in add {
            let n = capability_name(a);
            if !s.contains(&n) {
                s.push(n);
            }
        }
        s
    };
    if drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        // Dropping ALL keeps only what is added by name.
        set = add
            .iter()
            .filter(|a| !a.eq_ignore_ascii_case("ALL"))
            .map(|a| capability_name(a))
            .collect();
    } else {
        let dropped: Vec<String> = drop.iter().map(|d| capability_name(d)).collect();
        set.retain(|c| !dropped.contains(c));
    }
    set.sort();
    set.dedup();
    set
}

/// Syscalls the runtime-default seccomp profile refuses, and the
/// capability that lets a container have them back.
const DENIED_SYSCALLS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "acct",
            "add_key",
            "create_module",
            "get_kernel_syms",
            "kcmp",
            "keyctl",
            "lookup_dcookie",
            "nfsservctl",
            "query_module",
            "request_key",
            "uselib",
            "userfaultfd",
            "ustat",
            "vm86",
            "vm86old",
            "_sysctl",
            "sysfs",
        ],
    ),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "mount",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "setns",
            "swapoff",
            "swapon",
            "umount",
            "umount2",
            "unshare",
            "clone3",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot", "kexec_load", "kexec_file_load"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    (
        "CAP_SYS_PTRACE",
        &["ptrace", "process_vm_readv", "process_vm_writev"],
    ),
    (
        "CAP_SYS_TIME",
        &["clock_adjtime", "clock_settime", "settimeofday", "stime"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "move_pages", "set_mempolicy"],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The runtime-default seccomp profile: everything allowed except the
/// syscalls that reach past the container (kernel modules, keyrings,
/// mounts and namespaces, clocks, tracing other processes), unless the
/// container holds the capability that is their purpose. Refused calls
/// fail with EPERM.
pub fn runtime_default_seccomp(caps: &[String]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (cap, calls) in DENIED_SYSCALLS {
        if cap.is_empty() || !caps.iter().any(|c| c == cap) {
            names.extend_from_slice(calls);
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

/// A Localhost seccomp profile: an OCI (or Docker-format) JSON file.
///
/// # Errors
/// InvalidArgument when it cannot be read or is not a profile.
pub fn localhost_seccomp(path: &str) -> Result<Value, Status> {
    let path = path.strip_prefix("localhost/").unwrap_or(path);
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "seccomp profile {path:?}: a Localhost profile must be an absolute path"
        )));
    }
    let text = std::fs::read(path).map_err(|e| invalid(format!("seccomp profile {path}: {e}")))?;
    let mut v: Value = serde_json::from_slice(&text)
        .map_err(|e| invalid(format!("seccomp profile {path}: {e}")))?;
    if !v["defaultAction"].is_string() {
        return Err(invalid(format!("seccomp profile {path}: no defaultAction")));
    }
    // Docker's format: `name` for one syscall, architectures in archMap.
    if let Some(list) = v["syscalls"].as_array_mut() {
        for s in list.iter_mut() {
            if s["names"].is_null() {
                if let Some(n) = s["name"].as_str() {
                    s["names"] = json!([n]);
                }
            }
            if let Some(o) = s.as_object_mut() {
                o.remove("name");
                o.remove("includes");
                o.remove("excludes");
                o.remove("comment");
            }
        }
    }
    if v["architectures"].is_null() {
        if let Some(map) = v["archMap"].as_array() {
            let arches: Vec<Value> = map
                .iter()
                .flat_map(|a| {
                    std::iter::once(a["architecture"].clone()).chain(
                        a["subArchitectures"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect();
            v["architectures"] = Value::Array(arches);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("archMap");
    }
    Ok(v)
}

fn seccomp_for(
    profile: Option<&SecurityProfile>,
    deprecated: &str,
    caps: &[String],
) -> Result<Option<Value>, Status> {
    use hull_proto::runtime::v1::security_profile::ProfileType;
    if let Some(p) = profile {
        return match ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::RuntimeDefault) {
            ProfileType::Unconfined => Ok(None),
            ProfileType::RuntimeDefault => Ok(Some(runtime_default_seccomp(caps))),
            ProfileType::Localhost => localhost_seccomp(&p.localhost_ref).map(Some),
        };
    }
    match deprecated {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(runtime_default_seccomp(caps))),
        other => localhost_seccomp(other).map(Some),
    }
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

fn apparmor_for(profile: Option<&SecurityProfile>, deprecated: &str) -> Option<String> {
    use hull_proto::runtime::v1::security_profile::ProfileType;
    let name = match profile {
        Some(p) => match ProfileType::try_from(p.profile_type).ok()? {
            ProfileType::Localhost => p.localhost_ref.clone(),
            // The runtime's default profile is the host's to provide.
            _ => return None,
        },
        None => deprecated.strip_prefix("localhost/")?.to_owned(),
    };
    // Passed through to the runtime only where AppArmor is on.
    (!name.is_empty() && apparmor_enabled()).then_some(name)
}

/// A host device, as the spec lists it: (type, major, minor, mode).
fn device_of(path: &Path) -> Option<(&'static str, u64, u64, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    let kind = if m.file_type().is_char_device() {
        "c"
    } else if m.file_type().is_block_device() {
        "b"
    } else {
        return None;
    };
    let rdev = m.rdev();
    Some((
        kind,
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev),
        m.mode() & 0o777,
    ))
}

/// Every device node under the host's /dev (a privileged container's).
fn host_devices() -> Vec<(PathBuf, &'static str, u64, u64, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                // The container gets its own pts and shm.
                if !matches!(p.to_str(), Some("/dev/pts" | "/dev/shm" | "/dev/mqueue")) {
                    stack.push(p);
                }
            } else if !ft.is_symlink() {
                if let Some((k, maj, min, mode)) = device_of(&p) {
                    if p != Path::new("/dev/console") {
                        out.push((p, k, maj, min, mode));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn resources(r: &LinuxContainerResources, floor: i32, spec: &mut Value) {
    let res = &mut spec["linux"]["resources"];
    if r.cpu_shares > 0 {
        res["cpu"]["shares"] = json!(r.cpu_shares);
    }
    if r.cpu_quota > 0 {
        res["cpu"]["quota"] = json!(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        res["cpu"]["period"] = json!(r.cpu_period);
    }
    if !r.cpuset_cpus.is_empty() {
        res["cpu"]["cpus"] = json!(r.cpuset_cpus);
    }
    if !r.cpuset_mems.is_empty() {
        res["cpu"]["mems"] = json!(r.cpuset_mems);
    }
    if r.memory_limit_in_bytes > 0 {
        res["memory"]["limit"] = json!(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        res["memory"]["swap"] = json!(r.memory_swap_limit_in_bytes);
    }
    if !r.hugepage_limits.is_empty() {
        res["hugepageLimits"] = Value::Array(
            r.hugepage_limits
                .iter()
                .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
                .collect(),
        );
    }
    if !r.unified.is_empty() {
        res["unified"] = json!(r.unified);
    }
    spec["process"]["oomScoreAdj"] = json!(clamp_oom(r.oom_score_adj, floor));
}

/// The resources of an update, as the shim's Update takes them (OCI
/// `LinuxResources` JSON).
pub fn update_resources(r: &LinuxContainerResources) -> Vec<u8> {
    let mut spec = json!({"linux": {"resources": {}}, "process": {}});
    resources(r, i32::MIN, &mut spec);
    serde_json::to_vec(&spec["linux"]["resources"]).unwrap_or_default()
}

/// The container's spec.
///
/// # Errors
/// InvalidArgument for a config that cannot run (no command, a mount
/// without a path, an unreadable seccomp profile, a device that is not
/// one).
pub fn container(input: &ContainerInput<'_>) -> Result<Vec<u8>, Status> {
    let c = input.config;
    let mut spec = base(input.id)?;
    let mut typed: Spec = serde_json::from_value(spec.clone())
        .map_err(|e| status_of(Kind::Unknown, format!("spec: {e}")))?;
    hull_oci::spec::apply_image_config(&mut typed, input.image)
        .map_err(|e| status_of(Kind::Unknown, format!("image config: {e}")))?;
    spec = serde_json::to_value(&typed).map_err(|e| status_of(Kind::Unknown, e.to_string()))?;
    if let Some(o) = spec.as_object_mut() {
        o.remove("hostname");
    }
    let args = arguments(c, input.image);
    if args.is_empty() {
        return Err(invalid("no command specified"));
    }
    spec["process"]["args"] = json!(args);
    let env: Vec<String> = c
        .envs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    let base_env: Vec<String> =
        serde_json::from_value(spec["process"]["env"].clone()).unwrap_or_default();
    spec["process"]["env"] = json!(hull_oci::spec::merge_env(&base_env, &env));
    if !c.working_dir.is_empty() {
        spec["process"]["cwd"] = json!(c.working_dir);
    }
    spec["process"]["terminal"] = json!(c.tty);
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let mut user = input.user.clone();
    if let Some(g) = &sc.run_as_group {
        user.gid = u32::try_from(g.value).map_err(|_| invalid("run_as_group out of range"))?;
    }
    let mut gids = user.additional_gids.clone();
    for g in &sc.supplemental_groups {
        let g = u32::try_from(*g).map_err(|_| invalid("supplemental group out of range"))?;
        if !gids.contains(&g) {
            gids.push(g);
        }
    }
    spec["process"]["user"] = json!({"uid": user.uid, "gid": user.gid});
    if !gids.is_empty() {
        spec["process"]["user"]["additionalGids"] = json!(gids);
    }

    // Capabilities, seccomp, AppArmor, masked paths.
    let default_caps: Vec<String> =
        serde_json::from_value(spec["process"]["capabilities"]["bounding"].clone())
            .unwrap_or_default();
    let caps = if sc.privileged {
        host_capabilities()
    } else {
        let cap = sc.capabilities.clone().unwrap_or_default();
        capabilities(&default_caps, &cap.add_capabilities, &cap.drop_capabilities)
    };
    let ambient: Vec<String> = sc
        .capabilities
        .as_ref()
        .map(|c| {
            c.add_ambient_capabilities
                .iter()
                .map(|a| capability_name(a))
                .collect()
        })
        .unwrap_or_default();
    spec["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": ambient, "ambient": ambient,
    });
    spec["process"]["noNewPrivileges"] = json!(sc.no_new_privs);
    // Older kubelets still name profiles in the deprecated fields.
    #[allow(deprecated)]
    let (seccomp_path, apparmor_name) = (&sc.seccomp_profile_path, &sc.apparmor_profile);
    if !sc.privileged {
        if let Some(profile) = seccomp_for(sc.seccomp.as_ref(), seccomp_path, &caps)? {
            spec["linux"]["seccomp"] = profile;
        }
        if let Some(name) = apparmor_for(sc.apparmor.as_ref(), apparmor_name) {
            spec["process"]["apparmorProfile"] = json!(name);
        }
        if !sc.masked_paths.is_empty() {
            spec["linux"]["maskedPaths"] = json!(sc.masked_paths);
        }
        if !sc.readonly_paths.is_empty() {
            spec["linux"]["readonlyPaths"] = json!(sc.readonly_paths);
        }
    } else {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    }
    spec["root"] = json!({"path": "rootfs", "readonly": sc.readonly_rootfs});

    // Namespaces: the pod's.
    let (net, pod_pid, ipc) = pod_modes(input.sandbox);
    let pid_mode = sc
        .namespace_options
        .as_ref()
        .map(|n| mode(n.pid))
        .unwrap_or(pod_pid);
    let proc_ns = |kind: &str| Some(format!("/proc/{}/ns/{kind}", input.sandbox_pid));
    let mut namespaces = vec![ns("mount", None)];
    match pid_mode {
        NamespaceMode::Node => {}
        NamespaceMode::Pod => namespaces.push(ns("pid", proc_ns("pid"))),
        NamespaceMode::Target => {
            let pid = input
                .target_pid
                .ok_or_else(|| invalid("target container of the PID namespace is not running"))?;
            namespaces.push(ns("pid", Some(format!("/proc/{pid}/ns/pid"))));
        }
        NamespaceMode::Container => namespaces.push(ns("pid", None)),
    }
    if ipc != NamespaceMode::Node {
        namespaces.push(ns("ipc", proc_ns("ipc")));
    }
    if net != NamespaceMode::Node {
        namespaces.push(ns("uts", proc_ns("uts")));
        let path = input
            .netns
            .map(|p| p.display().to_string())
            .or_else(|| proc_ns("net"));
        namespaces.push(ns("network", path));
    }
    set_namespaces(&mut spec, namespaces);

    // Mounts: the defaults, the pod's files, then the config's.
    let wanted: Vec<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    let mut mounts: Vec<Value> = spec["mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            let d = m["destination"].as_str().unwrap_or("");
            d != "/dev/shm" && !wanted.contains(&d)
        })
        .collect();
    if sc.privileged {
        for m in &mut mounts {
            if m["destination"] == "/sys" {
                m["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
            }
        }
    }
    for (dest, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        if !wanted.contains(&dest) {
            mounts.push(bind(dest, &input.files.dir.join(file), sc.readonly_rootfs));
        }
    }
    if !wanted.contains(&"/dev/shm") {
        mounts.push(shm_mount(input.files, ipc));
    }
    let mut rootfs_propagation = None;
    for m in &c.mounts {
        if m.container_path.is_empty() || m.host_path.is_empty() {
            return Err(invalid("a mount needs a host path and a container path"));
        }
        if !m.container_path.starts_with('/') {
            return Err(invalid(format!(
                "mount {}: the container path must be absolute",
                m.container_path
            )));
        }
        let host = Path::new(&m.host_path);
        if !host.exists() {
            // As containerd's CRI: a missing host path becomes a directory.
            std::fs::create_dir_all(host)
                .map_err(|e| invalid(format!("mount {}: {e}", m.host_path)))?;
        }
        let propagation = match MountPropagation::try_from(m.propagation)
            .unwrap_or(MountPropagation::PropagationPrivate)
        {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => {
                rootfs_propagation.get_or_insert("rslave");
                "rslave"
            }
            MountPropagation::PropagationBidirectional => {
                rootfs_propagation = Some("rshared");
                "rshared"
            }
        };
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", propagation, if m.readonly { "ro" } else { "rw" }],
        }));
    }
    if let Some(p) = rootfs_propagation {
        spec["linux"]["rootfsPropagation"] = json!(p);
    }
    spec["mounts"] = Value::Array(mounts);

    // Devices.
    let mut devices = Vec::new();
    let mut allowed = vec![json!({"allow": false, "access": "rwm"})];
    if sc.privileged {
        for (path, kind, major, minor, mode) in host_devices() {
            devices.push(
                json!({"path": path, "type": kind, "major": major, "minor": minor,
                "fileMode": mode, "uid": 0, "gid": 0}),
            );
        }
        allowed.push(json!({"allow": true, "access": "rwm"}));
    }
    for d in &c.devices {
        let (kind, major, minor, mode) = device_of(Path::new(&d.host_path))
            .ok_or_else(|| invalid(format!("device {}: not a device", d.host_path)))?;
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|ch| "rwm".contains(ch)) {
            return Err(invalid(format!(
                "device {}: permissions {access:?} are not of r, w, m",
                d.host_path
            )));
        }
        let dest = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        devices.push(
            json!({"path": dest, "type": kind, "major": major, "minor": minor,
            "fileMode": mode, "uid": 0, "gid": 0}),
        );
        allowed.push(
            json!({"allow": true, "type": kind, "major": major, "minor": minor,
            "access": access}),
        );
    }
    if !devices.is_empty() {
        spec["linux"]["devices"] = Value::Array(devices);
    }
    spec["linux"]["resources"]["devices"] = Value::Array(allowed);
    if let Some(r) = &linux.resources {
        resources(r, input.oom_floor, &mut spec);
    } else {
        spec["process"]["oomScoreAdj"] = json!(clamp_oom(0, input.oom_floor));
    }
    spec["linux"]["cgroupsPath"] = json!(cgroup_path(input.sandbox, input.id));

    let pod = input.sandbox.metadata.clone().unwrap_or_default();
    let mut annotations = BTreeMap::new();
    annotations.insert(CONTAINER_TYPE.to_owned(), "container".to_owned());
    annotations.insert(SANDBOX_ID.to_owned(), input.sandbox_id.to_owned());
    annotations.insert(
        "io.kubernetes.cri.container-name".to_owned(),
        c.metadata.clone().unwrap_or_default().name,
    );
    annotations.insert("io.kubernetes.cri.sandbox-name".to_owned(), pod.name);
    annotations.insert(
        "io.kubernetes.cri.sandbox-namespace".to_owned(),
        pod.namespace,
    );
    annotations.insert("io.kubernetes.cri.sandbox-uid".to_owned(), pod.uid);
    annotations.insert(
        "io.kubernetes.cri.image-name".to_owned(),
        input.image_name.to_owned(),
    );
    spec["annotations"] = json!(annotations);
    finish(spec)
}

/// The pod's `/etc/hosts`.
pub fn hosts_file(hostname: &str, ip: Option<&str>) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        if !hostname.is_empty() {
            s.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    s
}

/// The pod's `/etc/resolv.conf` from its DNS config; None to copy the
/// host's.
pub fn resolv_conf(dns: Option<&hull_proto::runtime::v1::DnsConfig>) -> Option<String> {
    let d = dns?;
    if d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty() {
        return None;
    }
    let mut s = String::new();
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for server in &d.servers {
        s.push_str(&format!("nameserver {server}\n"));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_proto::runtime::v1::{ContainerMetadata, DnsConfig, KeyValue};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_the_command() {
        let image: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
               "config":{"Entrypoint":["/ep"],"Cmd":["a"]}}"#,
        )
        .unwrap();
        let mut c = ContainerConfig::default();
        assert_eq!(arguments(&c, &image), s(&["/ep", "a"]));
        c.args = s(&["b"]);
        assert_eq!(arguments(&c, &image), s(&["/ep", "b"]));
        c.command = s(&["/bin/sh"]);
        assert_eq!(arguments(&c, &image), s(&["/bin/sh", "b"]));
        c.args.clear();
        assert_eq!(arguments(&c, &image), s(&["/bin/sh"]));
    }

    #[test]
    fn capabilities_add_and_drop_with_all() {
        let d = s(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]);
        assert_eq!(
            capabilities(&d, &s(&["sys_admin"]), &s(&["NET_RAW"])),
            s(&["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"])
        );
        assert_eq!(
            capabilities(&d, &s(&["NET_BIND_SERVICE"]), &s(&["ALL"])),
            s(&["CAP_NET_BIND_SERVICE"])
        );
        // ALL is what this host can give (here: no CAP_SYS_RESOURCE).
        let all = capabilities(&d, &s(&["ALL"]), &[]);
        let mut host = host_capabilities();
        host.sort();
        assert_eq!(all, host);
        assert!(all.len() > d.len() && all.len() <= ALL_CAPABILITIES.len());
    }

    #[test]
    fn the_default_seccomp_profile_gives_calls_back_with_their_capability() {
        let without = runtime_default_seccomp(&[]);
        let names = without["syscalls"][0]["names"].as_array().unwrap().clone();
        assert!(names.contains(&json!("mount")) && names.contains(&json!("keyctl")));
        let with = runtime_default_seccomp(&s(&["CAP_SYS_ADMIN"]));
        let names = with["syscalls"][0]["names"].as_array().unwrap();
        assert!(!names.contains(&json!("mount")) && names.contains(&json!("keyctl")));
    }

    #[test]
    fn a_docker_format_profile_is_read_as_oci() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(
            &p,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],
               "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let v = localhost_seccomp(&format!("localhost/{}", p.display())).unwrap();
        assert_eq!(v["syscalls"][0]["names"], json!(["mkdir"]));
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        let typed: hull_oci::oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).unwrap();
        assert_eq!(typed.syscalls().as_ref().unwrap().len(), 1);
        assert_eq!(
            localhost_seccomp("relative.json").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(localhost_seccomp(&dir.path().join("none").display().to_string()).is_err());
    }

    #[test]
    fn a_container_joins_its_pods_namespaces_and_files() {
        let image: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
               "config":{"Cmd":["sh"],"Env":["PATH=/bin","A=1"]}}"#,
        )
        .unwrap();
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            envs: vec![KeyValue {
                key: "A".into(),
                value: "2".into(),
            }],
            ..Default::default()
        };
        let files = PodFiles {
            dir: PathBuf::from("/pods/p1"),
            shm: Some(PathBuf::from("/run/pods/p1/shm")),
        };
        let sandbox = PodSandboxConfig::default();
        let bytes = container(&ContainerInput {
            id: "c1",
            config: &config,
            sandbox_id: "p1",
            sandbox: &sandbox,
            sandbox_pid: 42,
            netns: Some(Path::new("/run/netns/p1")),
            files: &files,
            image: &image,
            image_name: "busybox",
            user: ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
            },
            target_pid: None,
            oom_floor: 0,
        })
        .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["process"]["args"], json!(["sh"]));
        assert_eq!(v["process"]["env"], json!(["PATH=/bin", "A=2"]));
        let nss = v["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.contains(&json!({"type": "network", "path": "/run/netns/p1"})));
        assert!(nss.contains(&json!({"type": "ipc", "path": "/proc/42/ns/ipc"})));
        assert!(nss.contains(&json!({"type": "pid", "path": "/proc/42/ns/pid"})));
        let mounts = v["mounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/dev/shm" && m["source"] == "/run/pods/p1/shm"));
        assert!(mounts.iter().any(
            |m| m["destination"] == "/etc/resolv.conf" && m["source"] == "/pods/p1/resolv.conf"
        ));
        assert_eq!(v["annotations"][SANDBOX_ID], "p1");
        assert_eq!(v["linux"]["cgroupsPath"], "/k8s.io/c1");
        assert!(v["linux"]["seccomp"].is_null());
        assert!(
            v["hostname"].is_null(),
            "the pod's UTS namespace keeps its name"
        );
    }

    #[test]
    fn resolv_conf_and_hosts() {
        assert_eq!(resolv_conf(None), None);
        let d = DnsConfig {
            servers: s(&["10.0.0.10"]),
            searches: s(&["ns.svc.cluster.local"]),
            options: s(&["ndots:5"]),
        };
        assert_eq!(
            resolv_conf(Some(&d)).unwrap(),
            "search ns.svc.cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        assert!(hosts_file("web", Some("10.1.0.2")).ends_with("10.1.0.2\tweb\n"));
        assert_eq!(clamp_oom(-998, 0), 0);
        assert_eq!(clamp_oom(500, 0), 500);
        assert_eq!(clamp_oom(-5000, -1000), -1000);
    }
}
