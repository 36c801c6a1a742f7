//! The runc shims' runtime options in every form clients send them.
//!
//! Clients of `io.containerd.runc.v1/v2` send `containerd.runc.v1.Options`.
//! Clients of the older `io.containerd.runtime.v1.linux` runtime send
//! `containerd.linux.runc.RuncOptions` with the container and
//! `containerd.linux.runc.CreateOptions` with the task. Both old messages
//! map field by field onto the new one, which is all a shim needs to read.

use prost::{Message, Name};

use crate::containerd::linux::runc::{CreateOptions, RuncOptions};
use crate::containerd::runc::v1::Options;

fn is<M: Name>(any: &prost_types::Any) -> bool {
    // containerd writes bare full names; others prefix a host.
    let name = M::full_name();
    any.type_url == name || any.type_url.ends_with(&format!("/{name}"))
}

/// The runc options `any` carries, or `None` when it is some other type
/// (a shim ignores options meant for another runtime, as containerd's do).
///
/// # Errors
/// When `any` names one of the three types but does not decode as it.
pub fn runc_options(any: &prost_types::Any) -> Result<Option<Options>, prost::DecodeError> {
    if is::<Options>(any) {
        return Options::decode(any.value.as_slice()).map(Some);
    }
    if is::<RuncOptions>(any) {
        let o = RuncOptions::decode(any.value.as_slice())?;
        return Ok(Some(Options {
            binary_name: o.runtime,
            root: o.runtime_root,
            criu_path: o.criu_path,
            systemd_cgroup: o.systemd_cgroup,
            ..Default::default()
        }));
    }
    if is::<CreateOptions>(any) {
        let o = CreateOptions::decode(any.value.as_slice())?;
        return Ok(Some(Options {
            no_pivot_root: o.no_pivot_root,
            no_new_keyring: o.no_new_keyring,
            shim_cgroup: o.shim_cgroup,
            io_uid: o.io_uid,
            io_gid: o.io_gid,
            criu_image_path: o.criu_image_path,
            criu_work_path: o.criu_work_path,
            ..Default::default()
        }));
    }
    Ok(None)
}

/// The one set of options a shim gets for a task: the task's own, else the
/// container's, as containerd's v2 runtime chooses. When both are the v1
/// runtime's halves (runtime options on the container, create options on
/// the task), they are merged into one `containerd.runc.v1.Options`, so
/// that the runtime binary named on the container is not lost.
pub fn for_task(
    task: Option<&prost_types::Any>,
    container: Option<&prost_types::Any>,
) -> Option<prost_types::Any> {
    let (Some(t), Some(c)) = (task, container) else {
        return task.or(container).cloned();
    };
    if !(is::<CreateOptions>(t) && is::<RuncOptions>(c)) {
        return Some(t.clone());
    }
    let (Ok(Some(t)), Ok(Some(c))) = (runc_options(t), runc_options(c)) else {
        return Some(t.clone());
    };
    Some(crate::typeurl::pack(&Options {
        binary_name: c.binary_name,
        root: c.root,
        criu_path: c.criu_path,
        systemd_cgroup: c.systemd_cgroup,
        ..t
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typeurl::pack;

    #[test]
    fn v1_options_map_onto_v2() {
        let r = pack(&RuncOptions {
            runtime: "crun".into(),
            runtime_root: "/r".into(),
            systemd_cgroup: true,
            ..Default::default()
        });
        let o = runc_options(&r).unwrap().unwrap();
        assert_eq!(
            (o.binary_name.as_str(), o.root.as_str(), o.systemd_cgroup),
            ("crun", "/r", true)
        );
        let c = pack(&CreateOptions {
            shim_cgroup: "/s".into(),
            no_pivot_root: true,
            ..Default::default()
        });
        let merged = for_task(Some(&c), Some(&r)).unwrap();
        let m = runc_options(&merged).unwrap().unwrap();
        assert_eq!(
            (
                m.binary_name.as_str(),
                m.shim_cgroup.as_str(),
                m.no_pivot_root
            ),
            ("crun", "/s", true)
        );
        let other = prost_types::Any {
            type_url: "example.com/Other".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(runc_options(&other).unwrap(), None);
        assert_eq!(for_task(None, Some(&r)), Some(r.clone()));
        assert_eq!(for_task(Some(&other), Some(&r)), Some(other));
        let bad = prost_types::Any {
            type_url: Options::full_name(),
            value: vec![0xff],
        };
        assert!(runc_options(&bad).is_err());
    }
}
