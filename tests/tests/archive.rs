//! Archives both ways through the Transfer API (`hullctl save`/`load`):
//! OCI layouts and `docker save` archives, several images in one, and
//! interplay with `ctr images export`/`import`.

use std::collections::BTreeMap;
use std::process::Command;

use hull_tests::daemon::{is_root, Daemon};
use hull_tests::image::{busybox_layer, image, write_docker_archive, write_oci_archive};

fn test_image(text: &str) -> hull_tests::image::TestImage {
    image(busybox_layer(&BTreeMap::from([(
        "hello".to_owned(),
        text.as_bytes().to_vec(),
    )])))
}

/// The digest `ctr images ls` shows for `name`.
fn target(d: &Daemon, name: &str) -> String {
    let ls = d.ctr_ok(&["images", "ls"]);
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().find(|f| f.starts_with("sha256:")))
        .unwrap_or_else(|| panic!("{name} not listed:\n{ls}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_and_docker_archives_round_trip_through_save_and_load() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = Daemon::start("archive-a").await;
    // An OCI layout and a docker-archive, loaded and unpacked.
    let oci = tmp.path().join("oci.tar");
    write_oci_archive(&oci, &test_image("from oci\n"), "docker.io/hull/oci:1");
    let out = a.hullctl_ok(&["load", "-i", oci.to_str().expect("path")]);
    assert_eq!(out, "Loaded image: docker.io/hull/oci:1\n");
    let docker = tmp.path().join("docker.tar");
    write_docker_archive(&docker, &test_image("from docker\n"), "hull/docker:2");
    let out = a.hullctl_ok(&["load", "-i", docker.to_str().expect("path")]);
    assert_eq!(out, "Loaded image: docker.io/hull/docker:2\n");
    assert_eq!(
        a.ctr_ok(&["run", "--rm", "docker.io/hull/oci:1", "o", "cat", "/hello"]),
        "from oci\n"
    );
    assert_eq!(
        a.ctr_ok(&[
            "run",
            "--rm",
            "docker.io/hull/docker:2",
            "d",
            "cat",
            "/hello"
        ]),
        "from docker\n"
    );

    // Both in one archive, into a fresh root: same digests, and they run.
    let both = tmp.path().join("both.tar");
    a.hullctl_ok(&[
        "save",
        "-o",
        both.to_str().expect("path"),
        "hull/oci:1",
        "docker.io/hull/docker:2",
    ]);
    let b = Daemon::start("archive-b").await;
    let out = b.hullctl_ok(&["load", "-i", both.to_str().expect("path")]);
    assert!(
        out.contains("docker.io/hull/oci:1") && out.contains("docker.io/hull/docker:2"),
        "{out}"
    );
    for name in ["docker.io/hull/oci:1", "docker.io/hull/docker:2"] {
        assert_eq!(target(&a, name), target(&b, name), "{name}");
    }
    assert_eq!(
        b.ctr_ok(&[
            "run",
            "--rm",
            "docker.io/hull/docker:2",
            "d",
            "cat",
            "/hello"
        ]),
        "from docker\n"
    );
    // The archive carries docker's manifest.json beside the OCI layout.
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&both)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in ["oci-layout", "index.json", "manifest.json"] {
        assert!(listing.lines().any(|l| l == f), "{f} missing:\n{listing}");
    }

    // A broken archive is a clear error and leaves the store as it was.
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").expect("junk");
    let out = b.hullctl_run(&["load", "-i", junk.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither an OCI image layout") || err.contains("tar"),
        "{err}"
    );
    assert_eq!(
        target(&a, "docker.io/hull/oci:1"),
        target(&b, "docker.io/hull/oci:1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hull_archives_and_ctr_archives_interoperate() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = Daemon::start("archive-ctr-a").await;
    let src = tmp.path().join("src.tar");
    write_oci_archive(&src, &test_image("interop\n"), "docker.io/hull/interop:1");
    a.ctr_ok(&["images", "import", src.to_str().expect("path")]);

    // ctr's export, hull's load.
    let from_ctr = tmp.path().join("ctr-export.tar");
    a.ctr_ok(&[
        "images",
        "export",
        from_ctr.to_str().expect("path"),
        "docker.io/hull/interop:1",
    ]);
    let b = Daemon::start("archive-ctr-b").await;
    b.hullctl_ok(&["load", "-i", from_ctr.to_str().expect("path")]);
    assert_eq!(
        b.ctr_ok(&[
            "run",
            "--rm",
            "docker.io/hull/interop:1",
            "i",
            "cat",
            "/hello"
        ]),
        "interop\n"
    );

    // hull's save, ctr's import.
    let from_hull = tmp.path().join("hull-save.tar");
    a.hullctl_ok(&[
        "save",
        "-o",
        from_hull.to_str().expect("path"),
        "docker.io/hull/interop:1",
    ]);
    let c = Daemon::start("archive-ctr-c").await;
    c.ctr_ok(&["images", "import", from_hull.to_str().expect("path")]);
    assert_eq!(
        target(&a, "docker.io/hull/interop:1"),
        target(&c, "docker.io/hull/interop:1")
    );
    assert_eq!(
        c.ctr_ok(&[
            "run",
            "--rm",
            "docker.io/hull/interop:1",
            "i",
            "cat",
            "/hello"
        ]),
        "interop\n"
    );
}
