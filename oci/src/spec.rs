//! Runtime specs that hull generates (tests, the CLI, CRI), built with
//! oci-spec's types: containerd's default Linux spec, an image config
//! applied to it (`oci.WithImageConfig`), and users resolved from the
//! image's own `/etc/passwd` and `/etc/group`.

use std::collections::HashSet;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

/// The PATH a process gets when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A spec could not be built as asked.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// oci-spec refused a value.
    #[error("build runtime spec")]
    Build(#[source] oci_spec::OciSpecError),
    /// The image's user is not in its `/etc/passwd` (or group in
    /// `/etc/group`).
    #[error("no {what} {name:?} in the image's /etc/{file}")]
    UnknownUser {
        /// "user" or "group".
        what: &'static str,
        /// The name.
        name: String,
        /// "passwd" or "group".
        file: &'static str,
    },
    /// A user text that is not `user[:group]`.
    #[error("user {0:?}: expected user, uid, user:group or uid:gid")]
    BadUser(String),
}

fn build<T>(r: Result<T, oci_spec::OciSpecError>) -> Result<T, SpecError> {
    r.map_err(SpecError::Build)
}

/// The capabilities containerd grants by default.
pub fn default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into()
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    build(
        MountBuilder::default()
            .destination(dest)
            .typ(kind)
            .source(source)
            .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
            .build(),
    )
}

/// The mounts containerd's default spec has.
pub fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
    ])
}

/// containerd's default Linux spec (`oci.GenerateSpec`) for container `id`
/// in namespace `ns`: root at `rootfs`, the default capabilities, mounts,
/// masked and read-only paths, PID, IPC, UTS, mount and network
/// namespaces, cgroup `/<ns>/<id>`, and no device access.
///
/// # Errors
/// Never for these values; oci-spec's builders can refuse in general.
pub fn default_spec(ns: &str, id: &str) -> Result<Spec, SpecError> {
    let caps = default_capabilities();
    let process = build(
        ProcessBuilder::default()
            .cwd("/")
            .no_new_privileges(true)
            .user(build(UserBuilder::default().uid(0u32).gid(0u32).build())?)
            .env(vec![DEFAULT_PATH.to_owned()])
            .args(Vec::<String>::new())
            .capabilities(build(
                // No inheritable or ambient capabilities, as containerd
                // since CVE-2022-24769 (oci-spec would default both to a
                // set, which also keeps dropped capabilities from working).
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .permitted(caps.clone())
                    .effective(caps)
                    .inheritable(HashSet::new())
                    .ambient(HashSet::new())
                    .build(),
            )?)
            .rlimits(vec![build(
                PosixRlimitBuilder::default()
                    .typ(PosixRlimitType::RlimitNofile)
                    .hard(1024u64)
                    .soft(1024u64)
                    .build(),
            )?])
            .build(),
    )?;
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| build(LinuxNamespaceBuilder::default().typ(t).build()))
    .collect::<Result<Vec<_>, _>>()?;
    let linux = build(
        LinuxBuilder::default()
            .masked_paths(strings(&[
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ]))
            .readonly_paths(strings(&[
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]))
            .cgroups_path(format!("/{ns}/{id}"))
            .resources(build(
                LinuxResourcesBuilder::default()
                    .devices(vec![build(
                        LinuxDeviceCgroupBuilder::default()
                            .allow(false)
                            .access("rwm")
                            .build(),
                    )?])
                    .build(),
            )?)
            .namespaces(namespaces)
            .build(),
    )?;
    build(
        SpecBuilder::default()
            .version("1.0.2-dev")
            // Writable, as containerd's (oci-spec's default root is read-only).
            .root(build(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(false)
                    .build(),
            )?)
            .process(process)
            .mounts(default_mounts()?)
            .linux(linux)
            .build(),
    )
}

/// `env` with `overrides` applied: a `KEY=value` replaces the entry of the
/// same key, else is appended; a bare `KEY` removes it (containerd's
/// `replaceOrAppendEnvValues`).
pub fn merge_env(env: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let mut out: Vec<String> = env.to_vec();
    for o in overrides {
        let k = key(o);
        let pos = out.iter().position(|e| key(e) == k);
        match (o.contains('='), pos) {
            (true, Some(i)) => out[i] = o.clone(),
            (true, None) => out.push(o.clone()),
            (false, Some(i)) => {
                out.remove(i);
            }
            (false, None) => {}
        }
    }
    out
}

/// What an image's config says to run, applied to `spec` as containerd's
/// `WithImageConfig` does: the image's environment over the spec's, its
/// entrypoint and command as the arguments (when it has either), its
/// working directory (else `/`). The user is left to [`apply_user`], which
/// may need the image's files. Returns the image's user text ("" for
/// none).
///
/// # Errors
/// Never for these values.
pub fn apply_image_config(
    spec: &mut Spec,
    image: &ImageConfiguration,
) -> Result<String, SpecError> {
    let Some(config) = image.config() else {
        return Ok(String::new());
    };
    let mut process = spec.process().clone().unwrap_or_default();
    let env = merge_env(
        process.env().as_deref().unwrap_or(&[]),
        config.env().as_deref().unwrap_or(&[]),
    );
    process.set_env(Some(env));
    let mut args: Vec<String> = config.entrypoint().clone().unwrap_or_default();
    args.extend(config.cmd().clone().unwrap_or_default());
    if !args.is_empty() {
        process.set_args(Some(args));
    }
    let cwd = config
        .working_dir()
        .as_deref()
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    process.set_cwd(cwd.into());
    spec.set_process(Some(process));
    Ok(config.user().clone().unwrap_or_default())
}

/// A user the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Further groups from `/etc/group` membership.
    pub additional_gids: Vec<u32>,
}

/// One line of `/etc/passwd` or `/etc/group`: name, id, gid (passwd) or
/// members (group).
fn entries(file: &str) -> impl Iterator<Item = Vec<&str>> {
    file.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

/// Resolves `user` (`user`, `uid`, `user:group`, `uid:gid`, mixed) as
/// containerd's `WithUser` does, against the image's `/etc/passwd` and
/// `/etc/group` contents (`None` when the image has no such file). A
/// numeric uid not in the files runs with gid 0 unless a group is given.
///
/// # Errors
/// UnknownUser for a name the files do not have; BadUser for text that is
/// not a user.
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) || user.matches(':').count() > 1 {
        return Err(SpecError::BadUser(user.to_owned()));
    }
    let passwd = passwd.unwrap_or("");
    let group_file = group.unwrap_or("");
    let by_name = entries(passwd).find(|e| e.len() >= 4 && e[0] == u);
    let (uid, mut gid, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let entry = entries(passwd).find(|e| e.len() >= 4 && e[2].parse() == Ok(uid));
            let gid = entry.as_ref().and_then(|e| e[3].parse().ok()).unwrap_or(0);
            (uid, gid, entry.map(|e| e[0].to_owned()))
        }
        Err(_) => {
            let e = by_name.ok_or_else(|| SpecError::UnknownUser {
                what: "user",
                name: u.to_owned(),
                file: "passwd",
            })?;
            let uid = e[2]
                .parse()
                .map_err(|_| SpecError::BadUser(user.to_owned()))?;
            let gid = e[3]
                .parse()
                .map_err(|_| SpecError::BadUser(user.to_owned()))?;
            (uid, gid, Some(u.to_owned()))
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group_file)
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| SpecError::UnknownUser {
                    what: "group",
                    name: g.to_owned(),
                    file: "group",
                })?,
        };
    }
    // Groups that list the user as a member, as an image's login would.
    let mut additional_gids = Vec::new();
    if let Some(name) = &name {
        for e in entries(group_file).filter(|e| e.len() >= 4) {
            if e[3].split(',').any(|m| m.trim() == name) {
                if let Ok(id) = e[2].parse::<u32>() {
                    if id != gid && !additional_gids.contains(&id) {
                        additional_gids.push(id);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Sets the process user of `spec`.
///
/// # Errors
/// Never for these values.
pub fn apply_user(spec: &mut Spec, user: &ResolvedUser) -> Result<(), SpecError> {
    let mut process = spec.process().clone().unwrap_or_default();
    let mut b = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        b = b.additional_gids(user.additional_gids.clone());
    }
    process.set_user(build(b.build())?);
    spec.set_process(Some(process));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    #[test]
    fn the_default_is_containerds() {
        let s = default_spec("default", "c1").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.cwd().to_str(), Some("/"));
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert!(json.contains("\"CAP_NET_RAW\""), "{json}");
        let linux = s.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap().to_str(),
            Some("/default/c1")
        );
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 5);
        assert_eq!(s.mounts().as_ref().unwrap().len(), 7);
        assert!(json.contains("\"rootfs\""));
        assert!(caps.inheritable().as_ref().is_none_or(|c| c.is_empty()));
        assert!(caps.ambient().as_ref().is_none_or(|c| c.is_empty()));
        // A container's root is writable unless asked otherwise.
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(false));
    }

    #[test]
    fn image_config_sets_env_args_cwd() {
        let mut s = default_spec("n", "c").unwrap();
        let image = ImageConfigurationBuilder::default()
            .config(
                ConfigBuilder::default()
                    .env(vec!["PATH=/bin".to_owned(), "A=1".to_owned()])
                    .entrypoint(vec!["/bin/sh".to_owned()])
                    .cmd(vec!["-c".to_owned(), "echo".to_owned()])
                    .working_dir("/work")
                    .user("nobody")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let user = apply_image_config(&mut s, &image).unwrap();
        assert_eq!(user, "nobody");
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.env().as_ref().unwrap(), &["PATH=/bin", "A=1"]);
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo"]);
        assert_eq!(p.cwd().to_str(), Some("/work"));
    }

    #[test]
    fn env_merges_as_containerd() {
        let base = vec!["PATH=/bin".to_owned(), "A=1".to_owned(), "B=2".to_owned()];
        let out = merge_env(&base, &["A=9".into(), "C=3".into(), "B".into()]);
        assert_eq!(out, ["PATH=/bin", "A=9", "C=3"]);
    }

    #[test]
    fn users_resolve_from_the_images_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nwheel:x:10:root,app\n";
        let r = |u| resolve_user(u, Some(passwd), Some(group));
        assert_eq!(
            r("app").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![50, 10]
            }
        );
        assert_eq!(r("1000:50").unwrap().gid, 50);
        assert_eq!(r("app:wheel").unwrap().gid, 10);
        assert_eq!(
            r("4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(r("65534").unwrap().gid, 65534);
        assert!(matches!(
            r("ghost"),
            Err(SpecError::UnknownUser { what: "user", .. })
        ));
        assert!(matches!(
            r("app:ghosts"),
            Err(SpecError::UnknownUser { what: "group", .. })
        ));
        assert!(matches!(r(""), Err(SpecError::BadUser(_))));
        assert!(matches!(r("a:b:c"), Err(SpecError::BadUser(_))));
        assert_eq!(resolve_user("0", None, None).unwrap().uid, 0);
        let mut s = default_spec("n", "c").unwrap();
        apply_user(&mut s, &r("app").unwrap()).unwrap();
        let u = s.process().as_ref().unwrap().user();
        assert_eq!((u.uid(), u.gid()), (1000, 1000));
    }
}
