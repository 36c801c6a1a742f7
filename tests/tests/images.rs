//! `ctr images import --no-unpack` of OCI and docker archives, image
//! verbs, and garbage collection of what an image held.

use std::collections::BTreeMap;
use std::time::Duration;

use hull_proto::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest, DeleteRequest, Resource,
};
use hull_tests::daemon::{eventually, Daemon};
use hull_tests::image::{busybox_layer, image, write_docker_archive, write_oci_archive, TestImage};

fn names(d: &Daemon) -> Vec<String> {
    d.ctr_ok(&["images", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn blobs_of(img: &TestImage) -> [String; 3] {
    [
        img.manifest.digest.clone(),
        img.config.digest.clone(),
        img.layer.digest.clone(),
    ]
}

fn content(d: &Daemon) -> String {
    d.ctr_ok(&["content", "ls", "-q"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_oci_and_docker_archives_then_tag_label_remove() {
    let d = Daemon::start("images").await;
    let oci = image(busybox_layer(&BTreeMap::new()));
    let docker = image(busybox_layer(
        &[("etc/flavour".to_string(), b"docker".to_vec())].into(),
    ));
    let oci_tar = d.dir().join("oci.tar");
    let docker_tar = d.dir().join("docker.tar");
    write_oci_archive(&oci_tar, &oci, "docker.io/hull/busybox:oci");
    write_docker_archive(&docker_tar, &docker, "hull/busybox:docker");

    d.ctr_ok(&[
        "images",
        "import",
        "--no-unpack",
        oci_tar.to_str().expect("path"),
    ]);
    d.ctr_ok(&[
        "images",
        "import",
        "--no-unpack",
        docker_tar.to_str().expect("path"),
    ]);
    let ls = names(&d);
    assert!(
        ls.contains(&"docker.io/hull/busybox:oci".to_string()),
        "{ls:?}"
    );
    assert!(
        ls.contains(&"docker.io/hull/busybox:docker".to_string()),
        "{ls:?}"
    );
    let full = d.ctr_ok(&["images", "ls"]);
    assert!(full.contains(&oci.manifest.digest), "{full}");

    // Every blob arrived, labelled so that GC can follow the image. (A
    // docker archive carries no manifest blob: ctr writes its own.)
    let c = content(&d);
    for b in blobs_of(&oci).iter().chain(blobs_of(&docker)[1..].iter()) {
        assert!(c.contains(b.as_str()), "{b} missing from\n{c}");
    }
    let ls = d.ctr_ok(&["content", "ls"]);
    let manifest_line = ls
        .lines()
        .find(|l| l.starts_with(&oci.manifest.digest))
        .expect("manifest");
    assert!(
        manifest_line.contains("containerd.io/gc.ref.content"),
        "{manifest_line}"
    );

    d.ctr_ok(&[
        "images",
        "tag",
        "docker.io/hull/busybox:oci",
        "docker.io/hull/busybox:copy",
    ]);
    d.ctr_ok(&[
        "images",
        "label",
        "docker.io/hull/busybox:copy",
        "team=runtime",
    ]);
    let full = d.ctr_ok(&["images", "ls"]);
    let copy = full
        .lines()
        .find(|l| l.starts_with("docker.io/hull/busybox:copy"))
        .expect(&full);
    assert!(
        copy.contains(&oci.manifest.digest) && copy.contains("team=runtime"),
        "{copy}"
    );

    // Removing one of two names for the same manifest keeps every blob.
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/busybox:oci"]);
    let c = content(&d);
    for b in blobs_of(&oci) {
        assert!(
            c.contains(b.as_str()),
            "{b} collected while still referenced"
        );
    }

    // Removing the last name collects the image's blobs, and only those.
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/busybox:copy"]);
    let c = content(&d);
    for b in blobs_of(&oci) {
        assert!(!c.contains(b.as_str()), "{b} survived its image");
        assert!(!d.blob_files().contains(&b), "{b} file survived its image");
    }
    for b in &blobs_of(&docker)[1..] {
        assert!(
            c.contains(b.as_str()),
            "{b} of the other image was collected"
        );
    }
    assert_eq!(names(&d), vec!["docker.io/hull/busybox:docker".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_layers_and_leased_blobs_outlive_a_removed_image() {
    let d = Daemon::start("gc").await;
    let base = busybox_layer(&BTreeMap::new());
    let a = image(base);
    // The same image imported twice, once per archive format: two images
    // sharing layer and config blobs.
    let (ta, tb) = (d.dir().join("a.tar"), d.dir().join("b.tar"));
    write_oci_archive(&ta, &a, "docker.io/hull/a:1");
    write_docker_archive(&tb, &a, "hull/b:1");
    d.ctr_ok(&["images", "import", "--no-unpack", ta.to_str().expect("p")]);
    d.ctr_ok(&["images", "import", "--no-unpack", tb.to_str().expect("p")]);

    // A lease holds the config blob on its own.
    let c = d.client().await;
    c.leases()
        .create(CreateRequest {
            id: "keep-config".into(),
            labels: Default::default(),
        })
        .await
        .expect("lease");
    c.leases()
        .add_resource(AddResourceRequest {
            id: "keep-config".into(),
            resource: Some(Resource {
                id: a.config.digest.clone(),
                r#type: "content".into(),
            }),
        })
        .await
        .expect("add resource");

    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/a:1"]);
    let listed = content(&d);
    // The docker import re-wrote its own manifest, but the layer and config
    // blobs are the same bytes: the other image still holds them.
    assert!(listed.contains(&a.layer.digest), "shared layer collected");
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/b:1"]);
    let listed = content(&d);
    assert!(
        !listed.contains(&a.layer.digest),
        "layer survived both images"
    );
    assert!(listed.contains(&a.config.digest), "leased blob collected");

    c.leases()
        .delete(DeleteRequest {
            id: "keep-config".into(),
            sync: true,
        })
        .await
        .expect("delete lease");
    assert!(
        !content(&d).contains(&a.config.digest),
        "blob outlived its lease"
    );
    let d2 = &d;
    assert!(
        eventually(Duration::from_secs(5), || d2.blob_files().is_empty()).await,
        "{:?}",
        d.blob_files()
    );
}
