//! Server-side pull from a real registry (Debian's docker-registry on
//! 127.0.0.1, seeded with skopeo): through hullctl and the Transfer API,
//! with hosts.toml, mirrors and fallback, platforms, and ctr's own
//! client-side pull still working.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use hull_tests::daemon::{is_root, workspace_bin, Daemon};
use hull_tests::image::{busybox_layer, image, write_oci_archive, write_oci_multi_platform};
use hull_tests::registry::{free_port, hosts_toml, Registry};

fn have_registry_tools() -> bool {
    let found = |b: &str| {
        Command::new("which")
            .arg(b)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(found("docker-registry") && found("skopeo")) {
        eprintln!(
            "skipped: docker-registry and skopeo are not installed (tests/run.sh installs them)"
        );
        return false;
    }
    true
}

/// A busybox image whose /hello holds `text`, as an OCI archive.
fn archive(dir: &Path, text: &str) -> std::path::PathBuf {
    let extra = BTreeMap::from([("hello".to_owned(), text.as_bytes().to_vec())]);
    let path = dir.join(format!("img-{}.tar", text.len()));
    write_oci_archive(&path, &image(busybox_layer(&extra)), "seed");
    path
}

fn hullctl(d: &Daemon, args: &[&str]) -> Output {
    Command::new(workspace_bin("hullctl"))
        .arg("--address")
        .arg(d.address())
        .arg("--namespace")
        .arg(&d.ns)
        .args(args)
        .output()
        .expect("run hullctl")
}

fn ok(out: &Output, what: &str, d: &Daemon) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config_for(certs: &Path) -> String {
    format!("[registry]\nconfig_path = \"{}\"\n", certs.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hullctl_pulls_over_http_from_hosts_toml_and_ctr_runs_it() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    reg.seed(
        &archive(tmp.path(), "pulled by hulld\n"),
        "team/app",
        "v1",
        None,
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let d = Daemon::start_with_config("pull-http", &config_for(&certs)).await;
    let name = format!("{}/team/app:v1", reg.host);

    let out = ok(&hullctl(&d, &["pull", &name]), "hullctl pull", &d);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.trim_end().ends_with(&name), "{out}");
    let listed = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == name), "{listed}");
    let run = d.ctr_ok(&["run", "--rm", &name, "pulled", "cat", "/hello"]);
    assert_eq!(run, "pulled by hulld\n");
    // Pulled again: nothing is downloaded, the layer is already there.
    let again = ok(&hullctl(&d, &["pull", &name]), "second pull", &d);
    assert!(again.contains("Already exists"), "{again}");

    // ctr's own client-side pull against hulld still works.
    reg.seed(
        &archive(tmp.path(), "pulled by ctr\n"),
        "team/app",
        "v2",
        None,
    );
    let v2 = format!("{}/team/app:v2", reg.host);
    d.ctr_ok(&["images", "pull", "--plain-http", &v2]);
    let run = d.ctr_ok(&["run", "--rm", &v2, "pulled2", "cat", "/hello"]);
    assert_eq!(run, "pulled by ctr\n");

    // Without a hosts.toml for the host, https is tried and fails clearly.
    let other = Registry::start("");
    other.seed(&archive(tmp.path(), "x\n"), "a", "1", None);
    let out = hullctl(&d, &["pull", &format!("{}/a:1", other.host)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("https://{}/v2/a/manifests/1", other.host)),
        "{err}"
    );
    // --plain-http reaches it.
    ok(
        &hullctl(
            &d,
            &["pull", "--plain-http", &format!("{}/a:1", other.host)],
        ),
        "plain-http pull",
        &d,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_pulls_the_host_platform_unless_all_are_asked() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    let host_arch = hull_tests::image::host_arch();
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mine = BTreeMap::from([("hello".to_owned(), b"host\n".to_vec())]);
    let theirs = BTreeMap::from([("hello".to_owned(), b"other\n".to_vec())]);
    let path = tmp.path().join("multi.tar");
    write_oci_multi_platform(
        &path,
        &[
            (other_arch, busybox_layer(&theirs)),
            (host_arch, busybox_layer(&mine)),
        ],
    );
    reg.seed_ref(
        &format!("oci-archive:{}:latest", path.display()),
        "multi",
        "1",
        None,
        &["--all"],
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let d = Daemon::start_with_config("pull-platforms", &config_for(&certs)).await;
    let name = format!("{}/multi:1", reg.host);
    ok(&hullctl(&d, &["pull", &name]), "pull", &d);
    // skopeo recompresses layers on the way in, so digests are the
    // registry's: count what came instead. Index, the host's manifest,
    // config and layer; nothing of the other platform.
    let blobs = |d: &Daemon| d.ctr_ok(&["content", "ls", "-q"]).lines().count();
    assert_eq!(blobs(&d), 4, "{}", d.ctr_ok(&["content", "ls"]));
    // The record's target is the index itself, as containerd's.
    let images = d.ctr_ok(&["images", "ls"]);
    assert!(
        images.contains("application/vnd.oci.image.index.v1+json"),
        "{images}"
    );
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "p1", "cat", "/hello"]),
        "host\n"
    );

    ok(
        &hullctl(&d, &["pull", "--all-platforms", &name]),
        "pull all",
        &d,
    );
    assert_eq!(blobs(&d), 7, "{}", d.ctr_ok(&["content", "ls"]));
    // A platform the index does not have is a clear NotFound.
    let out = hullctl(&d, &["pull", "--platform", "linux/s390x", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_the_pull_and_a_dead_one_falls_back() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let upstream = Registry::start("");
    let mirror = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Only the mirror has the image; the record keeps the upstream name.
    mirror.seed(
        &archive(tmp.path(), "from the mirror\n"),
        "lib/app",
        "1",
        None,
    );
    let certs = tmp.path().join("certs.d");
    let dead = format!("127.0.0.1:{}", free_port());
    hosts_toml(
        &certs,
        &upstream.host,
        &format!(
            "server = \"http://{}\"\n\n[host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host, mirror.host
        ),
    );
    let d = Daemon::start_with_config("pull-mirror", &config_for(&certs)).await;
    let name = format!("{}/lib/app:1", upstream.host);
    ok(
        &hullctl(&d, &["pull", &name]),
        "pull through the mirror",
        &d,
    );
    let listed = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == name), "{listed}");
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "m", "cat", "/hello"]),
        "from the mirror\n"
    );
    // The upstream was never needed.
    assert!(
        !upstream.log().contains("/v2/lib/app/"),
        "{}",
        upstream.log()
    );
}
