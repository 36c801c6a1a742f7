//! CRI on hulld's socket, through a CRI client built from proto/: the
//! ImageService against a real registry on 127.0.0.1, and the
//! RuntimeService's Version and Status.

use std::collections::BTreeMap;
use std::process::Command;

use hull_proto::runtime::v1::image_service_client::ImageServiceClient;
use hull_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use hull_proto::runtime::v1::{
    ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest, RunPodSandboxRequest, StatusRequest, VersionRequest,
};
use hull_tests::daemon::{is_root, Daemon};
use hull_tests::image::{busybox_layer, image, write_oci_archive};
use hull_tests::registry::{hosts_toml, Registry};

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

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn version_and_status_name_the_runtime_and_the_network() {
    let cni = tempfile::tempdir().expect("tempdir");
    let config = format!("[cri]\ncni_conf_dir = \"{}\"\n", cni.path().display());
    let d = Daemon::start_with_config("cri-status", &config).await;
    let mut rt = RuntimeServiceClient::new(d.client().await.channel());
    let v = rt
        .version(VersionRequest::default())
        .await
        .expect("version")
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("hull", "v1")
    );
    let status = |s: hull_proto::runtime::v1::StatusResponse| {
        s.status
            .expect("status")
            .conditions
            .into_iter()
            .map(|c| (c.r#type, c.status, c.reason))
            .collect::<Vec<_>>()
    };
    let s = status(
        rt.status(StatusRequest::default())
            .await
            .expect("status")
            .into_inner(),
    );
    assert!(
        s.contains(&("RuntimeReady".into(), true, String::new())),
        "{s:?}"
    );
    assert!(
        s.contains(&("NetworkReady".into(), false, "NetworkPluginNotReady".into())),
        "no CNI config yet: {s:?}"
    );
    std::fs::write(cni.path().join("10-net.conflist"), "{}").expect("write");
    let s = status(
        rt.status(StatusRequest::default())
            .await
            .expect("status")
            .into_inner(),
    );
    assert!(
        s.contains(&("NetworkReady".into(), true, String::new())),
        "{s:?}"
    );
    // A pod without a config is refused as such.
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest::default())
        .await
        .expect_err("no config");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_pulled_listed_shown_and_removed_by_id() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("img.tar");
    let extra = BTreeMap::from([("hello".to_owned(), b"cri\n".to_vec())]);
    write_oci_archive(&archive, &image(busybox_layer(&extra)), "seed");
    reg.seed(&archive, "team/app", "v1", None);
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let d = Daemon::start_with_config(
        "k8s.io",
        &format!("[registry]\nconfig_path = \"{}\"\n", certs.display()),
    )
    .await;
    let mut images = ImageServiceClient::new(d.client().await.channel());
    let name = format!("{}/team/app:v1", reg.host);

    let pulled = images
        .pull_image(PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .expect("pull")
        .into_inner();
    assert!(
        pulled.image_ref.starts_with("sha256:") && pulled.image_ref.len() == 71,
        "{}",
        pulled.image_ref
    );

    // The tag, the digest and the ID name one image; ctr sees the records.
    let status = images
        .image_status(ImageStatusRequest {
            image: spec(&name),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .image
        .expect("the image is there");
    assert_eq!(status.id, pulled.image_ref);
    assert_eq!(status.repo_tags, std::slice::from_ref(&name));
    assert_eq!(status.repo_digests.len(), 1);
    let by_digest = status.repo_digests[0].clone();
    assert!(
        by_digest.starts_with(&format!("{}/team/app@sha256:", reg.host)),
        "{by_digest}"
    );
    assert!(status.size > 0);
    let records = d.ctr_ok(&["images", "ls", "-q"]);
    for n in [&name, &by_digest, &pulled.image_ref] {
        assert!(records.lines().any(|l| l == n.as_str()), "{n} in {records}");
    }
    for key in [
        by_digest.as_str(),
        pulled.image_ref.as_str(),
        &pulled.image_ref[7..19],
    ] {
        let found = images
            .image_status(ImageStatusRequest {
                image: spec(key),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            found.image.map(|i| i.id).as_deref(),
            Some(pulled.image_ref.as_str()),
            "by {key}"
        );
        assert!(found.info.contains_key("info"));
    }
    let all = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .images;
    assert_eq!(all.len(), 1, "one image, however many names: {all:?}");
    let filtered = images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("nothing/here:1"),
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .images;
    assert!(filtered.is_empty());

    let fs = images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .expect("fs info")
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage
        .fs_id
        .as_ref()
        .expect("fs id")
        .mountpoint
        .ends_with("snapshots/overlayfs"));
    assert!(
        usage.used_bytes.as_ref().expect("bytes").value > 0,
        "the unpacked layer takes room"
    );

    // Not there: no image and no error; a pull of a missing tag is NotFound.
    let none = images
        .image_status(ImageStatusRequest {
            image: spec(&format!("{}/team/app:nope", reg.host)),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner();
    assert!(none.image.is_none());
    let e = images
        .pull_image(PullImageRequest {
            image: spec(&format!("{}/team/app:nope", reg.host)),
            ..Default::default()
        })
        .await
        .expect_err("missing tag");
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let e = images
        .pull_image(PullImageRequest {
            image: spec("Not A Reference"),
            ..Default::default()
        })
        .await
        .expect_err("bad reference");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());

    // Removing by tag removes every name; removing again is fine.
    images
        .remove_image(RemoveImageRequest { image: spec(&name) })
        .await
        .expect("remove");
    let records = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(records.trim().is_empty(), "{records}");
    images
        .remove_image(RemoveImageRequest { image: spec(&name) })
        .await
        .expect("remove again");
    assert!(images
        .list_images(ListImagesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .images
        .is_empty());
}
