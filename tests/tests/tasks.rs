//! Containers and tasks: `ctr run` and the `ctr tasks` / `ctr containers`
//! verbs against hulld, with hull-shim and Debian's runc.

use std::collections::BTreeMap;
use std::time::Duration;

use hull_tests::daemon::{is_root, Daemon};
use hull_tests::image::{busybox_layer, write_oci_layers};

const IMAGE: &str = "docker.io/hull/busybox:1";

/// Imports a busybox image into `d`.
fn import_busybox(d: &Daemon) {
    let tar = d.dir().join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_rm_prints_output_and_passes_exit_codes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-run").await;
    import_busybox(&d);
    let out = d.ctr_ok(&["run", "--rm", IMAGE, "hello1", "echo", "hello"]);
    assert_eq!(out, "hello\n");
    let out = d.ctr_run(&["run", "--rm", IMAGE, "exit3", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = Duration::from_secs(1);
}
