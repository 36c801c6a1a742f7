//! Events carry what containerd's carry; leases protect and expire.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use tonic::Code;

use hull_proto::containerd::events::{ContentDelete, NamespaceCreate};
use hull_proto::containerd::services::content::v1::{DeleteContentRequest, InfoRequest};
use hull_proto::containerd::services::events::v1::{Envelope, PublishRequest, SubscribeRequest};
use hull_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, Image, ImageCreate, ImageDelete,
};
use hull_proto::containerd::services::leases::v1::{CreateRequest, ListRequest};
use hull_proto::containerd::types::Descriptor;
use hull_tests::blobs::write_blob;
use hull_tests::daemon::Daemon;

async fn next(s: &mut tonic::Streaming<Envelope>) -> Envelope {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("event within 5s")
        .expect("stream")
        .expect("open stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_image_content_and_namespace_events() {
    let d = Daemon::start("ev").await;
    let c = d.client().await;
    let mut all = c
        .events()
        .subscribe(SubscribeRequest { filters: vec![] })
        .await
        .expect("subscribe")
        .into_inner();
    let mut images_only = c
        .events()
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic~="^/images/",namespace==ev"#.into()],
        })
        .await
        .expect("subscribe")
        .into_inner();

    d.ctr_ok(&["namespaces", "create", "other"]);
    // Held by a lease, so that the collection the image delete calls for
    // leaves it to the explicit delete below.
    c.leases()
        .create(CreateRequest {
            id: "ev-hold".into(),
            ..Default::default()
        })
        .await
        .expect("lease");
    let digest = write_blob(&c.with_lease("ev-hold"), "ev-blob", b"event payload")
        .await
        .expect("blob");
    c.images()
        .create(CreateImageRequest {
            image: Some(Image {
                name: "docker.io/x/ev:1".into(),
                labels: [("a".to_string(), "b".to_string())].into(),
                target: Some(Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: digest.clone(),
                    size: 13,
                    annotations: BTreeMap::new(),
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("create");
    c.images()
        .delete(DeleteImageRequest {
            name: "docker.io/x/ev:1".into(),
            sync: false,
        })
        .await
        .expect("delete");
    c.content()
        .delete(DeleteContentRequest {
            digest: digest.clone(),
        })
        .await
        .expect("rm");

    // Published in the caller's namespace, as containerd does.
    let e = next(&mut all).await;
    assert_eq!(
        (e.topic.as_str(), e.namespace.as_str()),
        ("/namespaces/create", "ev")
    );
    let ev = e.event.expect("payload");
    assert_eq!(ev.type_url, "containerd.events.NamespaceCreate");
    assert_eq!(
        NamespaceCreate::decode(ev.value.as_slice())
            .expect("decode")
            .name,
        "other"
    );

    let e = next(&mut all).await;
    assert_eq!(e.topic, "/images/create");
    let ev = e.event.expect("payload");
    assert_eq!(ev.type_url, "containerd.services.images.v1.ImageCreate");
    let created = ImageCreate::decode(ev.value.as_slice()).expect("decode");
    assert_eq!(created.name, "docker.io/x/ev:1");
    assert_eq!(created.labels.get("a").map(String::as_str), Some("b"));
    assert_eq!(next(&mut all).await.topic, "/images/delete");
    let e = next(&mut all).await;
    assert_eq!(e.topic, "/content/delete");
    let ev = e.event.expect("payload");
    assert_eq!(
        ContentDelete::decode(ev.value.as_slice())
            .expect("decode")
            .digest,
        digest
    );

    // The filtered subscriber saw only the two image events.
    let e = next(&mut images_only).await;
    assert_eq!(e.topic, "/images/create");
    let e = next(&mut images_only).await;
    assert_eq!(e.topic, "/images/delete");
    assert_eq!(
        ImageDelete::decode(e.event.expect("payload").value.as_slice())
            .expect("decode")
            .name,
        "docker.io/x/ev:1"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), images_only.message())
            .await
            .is_err()
    );

    // Publishing: topics are checked, and published events reach subscribers.
    let any = prost_types::Any {
        type_url: "example.Custom".into(),
        value: vec![1, 2, 3],
    };
    let bad = c
        .events()
        .publish(PublishRequest {
            topic: "no-slash".into(),
            event: Some(any.clone()),
        })
        .await;
    assert_eq!(bad.expect_err("bad topic").code(), Code::InvalidArgument);
    c.events()
        .publish(PublishRequest {
            topic: "/custom/thing".into(),
            event: Some(any.clone()),
        })
        .await
        .expect("publish");
    let e = next(&mut all).await;
    assert_eq!(
        (e.topic.as_str(), e.namespace.as_str()),
        ("/custom/thing", "ev")
    );
    assert_eq!(e.event, Some(any));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_leases_and_expiry() {
    let d = Daemon::start("leases").await;
    let out = d.ctr_ok(&["leases", "create", "--id", "manual", "owner=test"]);
    assert!(out.contains("manual"), "{out}");
    let ls = d.ctr_ok(&["leases", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("manual") && l.contains("owner=test")),
        "{ls}"
    );
    let dup = d.ctr_run(&["leases", "create", "--id", "manual"]);
    assert!(!dup.status.success());

    // A generated id is a valid identifier.
    let c = d.client().await;
    let generated = c
        .leases()
        .create(CreateRequest::default())
        .await
        .expect("create")
        .into_inner()
        .lease
        .expect("lease");
    hull_proto::identifiers::validate(&generated.id).expect("valid id");

    // A lease that expires protects its blob until then.
    let soon = std::time::SystemTime::now() + Duration::from_secs(2);
    let secs = soon
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let expire = rfc3339(secs);
    c.leases()
        .create(CreateRequest {
            id: "short".into(),
            labels: [("containerd.io/gc.expire".to_string(), expire)].into(),
        })
        .await
        .expect("create");
    let digest = write_blob(&c.with_lease("short"), "short-blob", b"short lived")
        .await
        .expect("blob");
    // A GC now keeps it.
    d.ctr_ok(&["leases", "rm", "--sync", &generated.id]);
    c.content()
        .info(InfoRequest {
            digest: digest.clone(),
        })
        .await
        .expect("still leased");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.ctr_ok(&["leases", "rm", "--sync", "manual"]);
    let gone = c.content().info(InfoRequest { digest }).await;
    assert_eq!(
        gone.expect_err("expired lease released its blob").code(),
        Code::NotFound
    );
    let left = c
        .leases()
        .list(ListRequest::default())
        .await
        .expect("list")
        .into_inner()
        .leases;
    assert!(left.is_empty(), "expired lease still listed: {left:?}");
}

/// RFC 3339 in UTC for whole seconds since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days (inverse of the usual days-from-civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
