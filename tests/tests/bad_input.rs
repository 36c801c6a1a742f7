//! Malformed requests get containerd's error codes, and change nothing.

use std::collections::BTreeMap;

use tonic::Code;

use hull_client::Client;
use hull_proto::containerd::services::content::v1::{
    Info, InfoRequest, ListContentRequest, UpdateRequest,
};
use hull_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use hull_proto::containerd::services::leases::v1::{AddResourceRequest, CreateRequest, Resource};
use hull_proto::containerd::services::namespaces::v1::{CreateNamespaceRequest, Namespace};
use hull_proto::containerd::types::Descriptor;
use hull_tests::blobs::write_blob;
use hull_tests::daemon::Daemon;
use hull_tests::image::sha256;

fn image(name: &str, digest: &str, media_type: &str, size: i64) -> Image {
    Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            annotations: BTreeMap::new(),
        }),
        ..Default::default()
    }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn snapshot(c: &Client) -> (Vec<Image>, Vec<Info>) {
    let mut images = c
        .images()
        .list(ListImagesRequest::default())
        .await
        .expect("list images")
        .into_inner()
        .images;
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let mut blobs = Vec::new();
    let mut s = c
        .content()
        .list(ListContentRequest::default())
        .await
        .expect("list")
        .into_inner();
    while let Some(m) = s.message().await.expect("list") {
        blobs.extend(m.info);
    }
    (images, blobs)
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.expect_err("request must fail").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_containerd_codes_and_change_nothing() {
    let d = Daemon::start("bad").await;
    let c = d.client().await;
    let digest = write_blob(&c, "seed", b"seed blob").await.expect("seed");
    c.images()
        .create(CreateImageRequest {
            image: Some(image("docker.io/x/seed:1", &digest, MANIFEST, 9)),
        })
        .await
        .expect("seed image");
    let before = snapshot(&c).await;

    // Malformed digests.
    for bad in [
        "sha256:zzz",
        "nocolon",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:../../etc/passwd",
        "",
    ] {
        assert_eq!(
            code(c.content().info(InfoRequest { digest: bad.into() }).await),
            Code::InvalidArgument,
            "{bad}"
        );
        let img = image("docker.io/x/bad:1", bad, MANIFEST, 9);
        assert_eq!(
            code(
                c.images()
                    .create(CreateImageRequest { image: Some(img) })
                    .await
            ),
            Code::InvalidArgument
        );
    }
    // Targets without a media type or size, and images without a name.
    let no_type = image("docker.io/x/bad:1", &digest, "", 9);
    assert_eq!(
        code(
            c.images()
                .create(CreateImageRequest {
                    image: Some(no_type)
                })
                .await
        ),
        Code::InvalidArgument
    );
    let no_size = image("docker.io/x/bad:1", &digest, MANIFEST, 0);
    assert_eq!(
        code(
            c.images()
                .create(CreateImageRequest {
                    image: Some(no_size)
                })
                .await
        ),
        Code::InvalidArgument
    );
    let no_name = image("", &digest, MANIFEST, 9);
    assert_eq!(
        code(
            c.images()
                .create(CreateImageRequest {
                    image: Some(no_name)
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.images().create(CreateImageRequest { image: None }).await),
        Code::InvalidArgument
    );

    // Identifiers that break containerd's rules.
    for bad in ["", "-lead", "trail-", "a/b", "dot..dot", &"x".repeat(77)] {
        let ns = Namespace {
            name: bad.to_string(),
            labels: BTreeMap::new(),
        };
        let r = c
            .namespaces()
            .create(CreateNamespaceRequest {
                namespace: Some(ns),
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "namespace {bad:?}");
    }
    // Lease ids only need to be non-empty text (containerd's clients make
    // ids like "307015574-_gS-"); NUL is refused.
    for bad in ["a\0b"] {
        let r = c
            .leases()
            .create(CreateRequest {
                id: bad.to_string(),
                labels: BTreeMap::new(),
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "lease {bad:?}");
    }
    let r = d
        .client()
        .await
        .with_namespace("no/slashes")
        .images()
        .list(ListImagesRequest::default())
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // Labels over the size limit.
    let huge: BTreeMap<String, String> = [("k".to_string(), "v".repeat(4096))].into();
    let mut img = image("docker.io/x/labels:1", &digest, MANIFEST, 9);
    img.labels = huge.clone();
    assert_eq!(
        code(
            c.images()
                .create(CreateImageRequest { image: Some(img) })
                .await
        ),
        Code::InvalidArgument
    );
    let r = c
        .content()
        .update(UpdateRequest {
            info: Some(Info {
                digest: digest.clone(),
                labels: huge.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.k".into()],
            }),
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let ns = Namespace {
        name: "labelled".into(),
        labels: huge.clone(),
    };
    assert_eq!(
        code(
            c.namespaces()
                .create(CreateNamespaceRequest {
                    namespace: Some(ns)
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.leases()
                .create(CreateRequest {
                    id: "big".into(),
                    labels: huge
                })
                .await
        ),
        Code::InvalidArgument
    );

    // Fields that cannot be updated.
    let r = c
        .images()
        .update(UpdateImageRequest {
            image: Some(image("docker.io/x/seed:1", &digest, MANIFEST, 9)),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["createdat".into()],
            }),
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // A missing namespace.
    let none = d.client().await.with_namespace("");
    assert_eq!(
        code(none.images().list(ListImagesRequest::default()).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            none.content()
                .info(InfoRequest {
                    digest: digest.clone()
                })
                .await
        ),
        Code::FailedPrecondition
    );

    // Unknown objects.
    assert_eq!(
        code(
            c.images()
                .get(GetImageRequest {
                    name: "docker.io/x/none:1".into()
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.images()
                .delete(DeleteImageRequest {
                    name: "docker.io/x/none:1".into(),
                    sync: false
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.content()
                .info(InfoRequest {
                    digest: sha256(b"absent")
                })
                .await
        ),
        Code::NotFound
    );
    // A write under a lease that does not exist.
    let leased = d
        .client()
        .await
        .with_namespace("bad")
        .with_lease("no-such-lease");
    assert_eq!(
        code(write_blob(&leased, "leased", b"data").await),
        Code::NotFound
    );

    // Lease resources of unknown type or with malformed ids.
    c.leases()
        .create(CreateRequest {
            id: "l1".into(),
            labels: BTreeMap::new(),
        })
        .await
        .expect("lease");
    let add = |ty: &str, id: &str| AddResourceRequest {
        id: "l1".into(),
        resource: Some(Resource {
            id: id.into(),
            r#type: ty.into(),
        }),
    };
    assert_eq!(
        code(c.leases().add_resource(add("widgets", "x")).await),
        Code::Unimplemented
    );
    assert_eq!(
        code(
            c.leases()
                .add_resource(add("content", "not-a-digest"))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.leases().add_resource(add("snapshots", "k")).await),
        Code::InvalidArgument
    );

    // Unknown media types are stored as given, as containerd does: the
    // image store does not interpret them.
    let odd = image("docker.io/x/odd:1", &digest, "application/x-unknown", 9);
    c.images()
        .create(CreateImageRequest { image: Some(odd) })
        .await
        .expect("unknown media type accepted");
    c.images()
        .delete(DeleteImageRequest {
            name: "docker.io/x/odd:1".into(),
            sync: true,
        })
        .await
        .expect("delete");

    assert_eq!(
        snapshot(&c).await,
        before,
        "bad requests changed stored state"
    );
    assert!(
        d.log().lines().all(|l| !l.contains("panicked")),
        "hulld panicked:\n{}",
        d.log()
    );
}
