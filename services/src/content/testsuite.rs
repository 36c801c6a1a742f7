//! The content store conformance suite: containerd's
//! `content/testsuite` cases, in our words, run over every [`ContentStore`]
//! hull has: the namespaced store over the metadata DB in-process, and the
//! same store through the content gRPC service and [`ProxyContentStore`].
//!
//! [`content_suite!`] expands one `#[tokio::test]` per case over a factory.
//! Each case gets fresh directories, and a listing of them when it fails.
//! Times are checked to the nanosecond against the wall clock around each
//! call, as containerd's suite does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use hull_proto::digest::Digest;
use hull_proto::errdefs::{Classify, Kind};
use hull_proto::identifiers::Namespace;

use super::proxy::ProxyContentStore;
use super::{ContentStore, ContentWriter, IngestStatus, LocalContentStore};
use crate::metadata::content::NamespacedContent;
use crate::metadata::MetaDb;

/// A store under test and what must live as long as it.
pub struct Fixture {
    /// The store.
    pub store: Box<dyn ContentStore>,
    _keep: Vec<Box<dyn std::any::Any + Send>>,
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} ----", self.dir.path().display());
            dump(self.dir.path(), 0);
        }
    }
}

fn dump(dir: &Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let meta = e.metadata().ok();
        eprintln!(
            "{}{} {}",
            "  ".repeat(depth),
            e.file_name().to_string_lossy(),
            meta.as_ref().map_or(0, |m| m.len())
        );
        if meta.is_some_and(|m| m.is_dir()) {
            dump(&e.path(), depth + 1);
        }
    }
}

fn open_db(root: &Path) -> Arc<MetaDb> {
    let content = LocalContentStore::open(root.join("content")).expect("content store");
    MetaDb::open(&root.join("meta.sled"), content).expect("metadata db")
}

fn namespace() -> Namespace {
    Namespace::new("testsuite").expect("namespace")
}

/// The namespaced store over a fresh metadata DB, in this process.
pub async fn in_process() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path());
    Fixture {
        store: Box::new(NamespacedContent::new(db, namespace(), None)),
        _keep: Vec::new(),
        dir,
    }
}

/// The same store served by the content gRPC service on a unix socket,
/// reached through [`ProxyContentStore`].
pub async fn through_grpc() -> Fixture {
    use hull_proto::containerd::services::content::v1::content_server::ContentServer;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path());
    let sock = dir.path().join("content.sock");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
    let tasks = tokio_util::task::TaskTracker::new();
    let service =
        crate::api::content::ContentService::new(db, crate::events::Exchange::new(), tasks);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContentServer::new(service))
            .serve_with_incoming_shutdown(
                crate::listener::incoming(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    Fixture {
        store: Box::new(ProxyContentStore::new(&sock, "testsuite")),
        _keep: vec![Box::new(stop.drop_guard()), Box::new(AbortOnDrop(server))],
        dir,
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

static SEED: AtomicU64 = AtomicU64::new(1);

/// Fresh pseudo-random content, different on every call.
fn content(size: usize) -> (Vec<u8>, Digest) {
    let mut x = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst);
    let data: Vec<u8> = (0..size)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let d = sha(&data);
    (data, d)
}

fn sha(data: &[u8]) -> Digest {
    Digest::sha256(&Sha256::digest(data).into())
}

fn now() -> i64 {
    crate::now_nanos()
}

fn gc_root() -> BTreeMap<String, String> {
    [(
        "containerd.io/gc.root".to_owned(),
        "2026-01-01T00:00:00Z".to_owned(),
    )]
    .into()
}

/// Copies `data` through the writer in small writes, as `io.CopyBuffer`
/// with a small buffer does.
async fn copy(w: &mut Box<dyn ContentWriter>, data: &[u8], chunk: usize) {
    for c in data.chunks(chunk) {
        w.write(c.to_vec()).await.expect("write");
    }
}

/// Checks a writer's status and digest, with its times in the windows
/// given (nanoseconds).
async fn check_status(
    w: &mut Box<dyn ContentWriter>,
    expected: &IngestStatus,
    digest: &Digest,
    started: (i64, i64),
    updated: (i64, i64),
) {
    let st = w.status().await.expect("status");
    assert_eq!(&w.digest().await.expect("digest"), digest, "digest");
    assert_eq!(st.ref_key, expected.ref_key, "ref");
    assert_eq!(st.offset, expected.offset, "offset");
    assert_eq!(st.total, expected.total, "total");
    assert!(
        (started.0..=started.1).contains(&st.started_at),
        "started_at {} not in {started:?}",
        st.started_at
    );
    assert!(
        (updated.0..=updated.1).contains(&st.updated_at),
        "updated_at {} not in {updated:?} ({} ns early)",
        st.updated_at,
        updated.0 - st.updated_at
    );
}

async fn check_info(
    cs: &dyn ContentStore,
    d: &Digest,
    size: i64,
    labels: &BTreeMap<String, String>,
    created: (i64, i64),
    updated: (i64, i64),
) {
    let info = cs.info(d).await.expect("info");
    assert_eq!(&info.digest, d);
    assert_eq!(info.size, size, "size");
    assert!(
        (created.0..=created.1).contains(&info.created_at),
        "created_at {} not in {created:?}",
        info.created_at
    );
    assert!(
        (updated.0..=updated.1).contains(&info.updated_at),
        "updated_at {} not in {updated:?}",
        info.updated_at
    );
    assert_eq!(&info.labels, labels, "labels");
}

/// Writes `data` whole under `r`, as containerd's `content.WriteBlob`.
async fn write_blob(cs: &dyn ContentStore, r: &str, data: &[u8], d: &Digest) {
    let mut w = cs
        .writer(r, data.len() as i64, Some(d.clone()))
        .await
        .expect("writer");
    copy(&mut w, data, 1 << 20).await;
    w.commit(data.len() as i64, Some(d.clone()), BTreeMap::new())
        .await
        .expect("commit");
    w.close().await.expect("close");
}

async fn ref_not_available(cs: &dyn ContentStore, r: &str) {
    match cs.writer(r, 0, None).await {
        Ok(w) => {
            let _ = w.close().await;
            panic!("a second writer got ref {r}");
        }
        Err(e) => assert_eq!(e.kind(), Kind::Unavailable, "{e}"),
    }
}

/// Case `writer`: four writers with and without size and digest, written
/// in small chunks, committed with labels.
pub async fn writer(cs: &dyn ContentStore) {
    let mut blobs = Vec::new();
    for (i, (size, digest)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let (data, d) = content(256);
        let w = cs
            .writer(
                &format!("c{}", i + 1),
                if size { 256 } else { 0 },
                digest.then(|| d.clone()),
            )
            .await
            .expect("writer");
        blobs.push((data, d, w));
    }
    for (data, d, w) in &mut blobs {
        copy(w, data, 32).await;
        let pre = now();
        w.commit(0, None, gc_root()).await.expect("commit");
        let post = now();
        check_info(cs, d, 256, &gc_root(), (pre, post), (pre, post)).await;
    }
}

/// Case `update_status`: status after each write, then the info after the
/// commit; and the expected digest through the store's own status.
pub async fn update_status(cs: &dyn ContentStore) {
    let (data, d) = content(256);
    let pre_start = now();
    let mut w = cs.writer("c1", 256, Some(d.clone())).await.expect("writer");
    let post_start = now();
    let mut expected = IngestStatus {
        ref_key: "c1".into(),
        offset: 0,
        total: 256,
        expected: None,
        started_at: 0,
        updated_at: 0,
    };
    let start = (pre_start, post_start);
    check_status(&mut w, &expected, &sha(b""), start, start).await;
    let st = cs.status("c1").await.expect("store status");
    assert_eq!(st.expected.as_ref(), Some(&d), "expected digest kept");
    assert_eq!(st.total, 256);
    for (from, to) in [(0, 64), (64, 192), (192, 256)] {
        let pre = now();
        w.write(data[from..to].to_vec()).await.expect("write");
        let post = now();
        expected.offset = to as u64;
        check_status(&mut w, &expected, &sha(&data[..to]), start, (pre, post)).await;
        // The store's own status agrees, to the nanosecond.
        let st = cs.status("c1").await.expect("store status");
        assert_eq!(st.offset, to as u64);
        assert!((pre..=post).contains(&st.updated_at), "store status time");
    }
    let pre = now();
    w.commit(0, None, gc_root()).await.expect("commit");
    let post = now();
    check_info(cs, &d, 256, &gc_root(), (pre, post), (pre, post)).await;
}

/// Case `commit_exists`: committing what the store has, with and without
/// the digest, is AlreadyExists.
pub async fn commit_exists(cs: &dyn ContentStore) {
    let (data, d) = content(256);
    write_blob(cs, "c1", &data, &d).await;
    for (i, expected) in [Some(d.clone()), None].into_iter().enumerate() {
        let mut w = cs
            .writer(&format!("c1-commitexists-{i}"), 0, None)
            .await
            .expect("writer");
        w.write(data.clone()).await.expect("write");
        let e = w
            .commit(data.len() as i64, expected, BTreeMap::new())
            .await
            .expect_err("commit of an existing blob");
        assert_eq!(e.kind(), Kind::AlreadyExists, "({i}) {e}");
        w.close().await.expect("close");
    }
}

/// Case `resume`: a writer closed half way, reopened: same status, same
/// times, then the rest.
pub async fn resume(cs: &dyn ContentStore) {
    let (data, d) = content(256);
    let (first, second) = data.split_at(128);
    let pre_start = now();
    let mut w1 = cs.writer("cb", 256, Some(d.clone())).await.expect("writer");
    let post_start = now();
    let pre = post_start;
    w1.write(first.to_vec()).await.expect("write");
    let post = now();
    let mut expected = IngestStatus {
        ref_key: "cb".into(),
        offset: 128,
        total: 256,
        expected: None,
        started_at: 0,
        updated_at: 0,
    };
    let start = (pre_start, post_start);
    check_status(&mut w1, &expected, &sha(first), start, (pre, post)).await;
    w1.close().await.expect("close");
    // Reopened at once: the closing writer is waited for, not refused.
    let mut w2 = cs.writer("cb", 256, Some(d.clone())).await.expect("reopen");
    check_status(&mut w2, &expected, &sha(first), start, (pre, post)).await;
    let pre = now();
    w2.write(second.to_vec()).await.expect("write");
    let post = now();
    expected.offset = 256;
    check_status(&mut w2, &expected, &d, start, (pre, post)).await;
    let pre = now();
    w2.commit(0, None, BTreeMap::new()).await.expect("commit");
    let post = now();
    w2.close().await.expect("close");
    check_info(cs, &d, 256, &BTreeMap::new(), (pre, post), (pre, post)).await;
}

/// How the rest of a resumed ingest is written.
#[derive(Debug, Clone, Copy)]
pub enum Resume {
    /// Truncate and write everything again.
    Truncate,
    /// Write only what is missing.
    Discard,
    /// containerd's `content.Copy`: skip what the status says is there.
    Copy,
}

/// Cases `resume_truncate`, `resume_discard`, `resume_copy`: ingests of
/// three sizes cut at five points, closed, reopened and finished.
pub async fn resume_with(cs: &dyn ContentStore, how: Resume) {
    for (i, size) in [500usize, 5000, 50_000].into_iter().enumerate() {
        for (j, cut) in [0.0, 0.1, 0.5, 0.9, 1.0].into_iter().enumerate() {
            let (data, d) = content(size);
            let limit = (size as f64 * cut) as usize;
            let r = format!("ref-{i}-{j}");
            let mut w = cs
                .writer(&r, size as i64, Some(d.clone()))
                .await
                .expect("writer");
            if limit > 0 {
                w.write(data[..limit].to_vec()).await.expect("write");
            }
            w.close().await.expect("close");
            let mut w = cs
                .writer(&r, size as i64, Some(d.clone()))
                .await
                .expect("reopen");
            let st = w.status().await.expect("status");
            assert_eq!(st.offset, limit as u64, "{r}: resumed offset");
            let pre = now();
            match how {
                Resume::Truncate => {
                    w.truncate().await.expect("truncate");
                    copy(&mut w, &data, 1024).await;
                }
                Resume::Discard => copy(&mut w, &data[limit..], 1024).await,
                Resume::Copy => {
                    let from = w.status().await.expect("status").offset as usize;
                    copy(&mut w, &data[from..], 32 << 10).await;
                }
            }
            w.commit(size as i64, Some(d.clone()), BTreeMap::new())
                .await
                .expect("commit");
            let post = now();
            w.close().await.expect("close");
            check_info(
                cs,
                &d,
                size as i64,
                &BTreeMap::new(),
                (pre, post),
                (pre, post),
            )
            .await;
        }
    }
}

/// Case `small_blob`: reading past the end of a small blob gives the blob.
pub async fn small_blob(cs: &dyn ContentStore) {
    let blob = b"foobar";
    let d = sha(blob);
    let mut w = cs
        .writer("small", blob.len() as i64, Some(d.clone()))
        .await
        .expect("writer");
    w.write(blob.to_vec()).await.expect("write");
    w.commit(blob.len() as i64, Some(d.clone()), BTreeMap::new())
        .await
        .expect("commit");
    w.close().await.expect("close");
    let got = cs.read_at(&d, 0, blob.len() + 1).await.expect("read");
    assert_eq!(sha(&got), d, "read {got:?}");
    assert_eq!(cs.read_at(&d, 3, 100).await.expect("read"), b"bar");
}

/// Case `labels`: labels at commit, replaced whole, then by field paths.
pub async fn labels(cs: &dyn ContentStore) {
    let (data, d) = content(256);
    let mut w = cs
        .writer("c1-checklabels", 256, Some(d.clone()))
        .await
        .expect("writer");
    w.write(data).await.expect("write");
    let root = "2026-01-01T00:00:00Z".to_owned();
    let mut labels: BTreeMap<String, String> = [
        ("k1".to_owned(), "v1".to_owned()),
        ("k2".to_owned(), "v2".to_owned()),
        ("containerd.io/gc.root".to_owned(), root.clone()),
    ]
    .into();
    let pre_commit = now();
    w.commit(0, None, labels.clone()).await.expect("commit");
    let post_commit = now();
    let committed = (pre_commit, post_commit);
    check_info(cs, &d, 256, &labels, committed, committed).await;
    labels.insert("k1".into(), "newvalue".into());
    labels.remove("k2");
    labels.insert("k3".into(), "v3".into());
    let info = |labels: &BTreeMap<String, String>| super::Info {
        digest: d.clone(),
        size: 256,
        created_at: 0,
        updated_at: 0,
        labels: labels.clone(),
    };
    let pre = now();
    cs.update(info(&labels), Vec::new()).await.expect("update");
    let post = now();
    check_info(cs, &d, 256, &labels, committed, (pre, post)).await;
    let wanted: BTreeMap<String, String> = [
        ("k1".to_owned(), "v1".to_owned()),
        ("containerd.io/gc.root".to_owned(), root),
    ]
    .into();
    let pre = now();
    cs.update(info(&wanted), vec!["labels.k3".into(), "labels.k1".into()])
        .await
        .expect("update paths");
    let post = now();
    check_info(cs, &d, 256, &wanted, committed, (pre, post)).await;
    let e = cs
        .update(info(&wanted), vec!["size".into()])
        .await
        .expect_err("size is not updatable");
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
}

/// Case `commit_error_state`: every way a commit fails leaves the ingest
/// as it was, the ref free once the writer closes, and never two writers.
pub async fn commit_error_state(cs: &dyn ContentStore) {
    let (c1, d1) = content(256);
    let (_, d2) = content(256);
    write_blob(cs, "c1", &c1, &d1).await;
    let r = "c1-commiterror-state";

    let mut w = cs.writer(r, 0, None).await.expect("writer");
    w.write(c1.clone()).await.expect("write");
    ref_not_available(cs, r).await;
    let e = w
        .commit(c1.len() as i64, Some(d1.clone()), BTreeMap::new())
        .await
        .expect_err("exists");
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    w.close().await.expect("close");

    let mut w = cs.writer(r, 0, None).await.expect("writer");
    ref_not_available(cs, r).await;
    w.write(c1.clone()).await.expect("write");
    let e = w
        .commit(c1.len() as i64, None, BTreeMap::new())
        .await
        .expect_err("exists without a digest");
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    w.close().await.expect("close");

    let mut w = cs.writer(r, 0, None).await.expect("writer");
    ref_not_available(cs, r).await;
    let mut more = c1.clone();
    more.extend_from_slice(b"more");
    w.write(more.clone()).await.expect("write");
    let e = w
        .commit(more.len() as i64, Some(d2), BTreeMap::new())
        .await
        .expect_err("wrong digest");
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    w.close().await.expect("close");

    let mut w = cs.writer(r, 0, None).await.expect("writer");
    ref_not_available(cs, r).await;
    assert_eq!(w.status().await.expect("status").offset, more.len() as u64);
    let e = w
        .commit(c1.len() as i64, None, BTreeMap::new())
        .await
        .expect_err("wrong size");
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    w.close().await.expect("close");

    let mut w = cs.writer(r, 0, None).await.expect("writer");
    ref_not_available(cs, r).await;
    w.commit(more.len() as i64, None, BTreeMap::new())
        .await
        .expect("commit succeeds at last");
    w.close().await.expect("close");

    let mut w = cs.writer(r, 0, None).await.expect("writer again");
    w.write(c1.clone()).await.expect("write");
    ref_not_available(cs, r).await;
    let e = w
        .commit(c1.len() as i64, Some(d1), BTreeMap::new())
        .await
        .expect_err("exists");
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    w.close().await.expect("close");

    let w = cs.writer(r, 0, None).await.expect("writer");
    ref_not_available(cs, r).await;
    w.close().await.expect("close");
    let w = cs.writer(r, 0, None).await.expect("available after close");
    w.close().await.expect("close");
}

/// Case `reopen_right_after_close`: a client that closes a writer and at
/// once opens the ref again is never refused, a hundred times over.
pub async fn reopen_right_after_close(cs: &dyn ContentStore) {
    for i in 0..100u8 {
        let mut w = cs.writer("again", 0, None).await.expect("reopen");
        w.write(vec![i]).await.expect("write");
        w.close().await.expect("close");
    }
    let st = cs.status("again").await.expect("status");
    assert_eq!(st.offset, 100);
}

/// One `#[tokio::test]` per case, over `$factory` (an async fn returning
/// a [`Fixture`]).
macro_rules! content_suite {
    ($name:ident, $factory:path) => {
        mod $name {
            use super::*;

            async fn fixture() -> Fixture {
                $factory().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn writer() {
                let f = fixture().await;
                super::writer(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn update_status() {
                let f = fixture().await;
                super::update_status(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_exists() {
                let f = fixture().await;
                super::commit_exists(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resume() {
                let f = fixture().await;
                super::resume(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resume_truncate() {
                let f = fixture().await;
                super::resume_with(f.store.as_ref(), Resume::Truncate).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resume_discard() {
                let f = fixture().await;
                super::resume_with(f.store.as_ref(), Resume::Discard).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resume_copy() {
                let f = fixture().await;
                super::resume_with(f.store.as_ref(), Resume::Copy).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn small_blob() {
                let f = fixture().await;
                super::small_blob(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn labels() {
                let f = fixture().await;
                super::labels(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_error_state() {
                let f = fixture().await;
                super::commit_error_state(f.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reopen_right_after_close() {
                let f = fixture().await;
                super::reopen_right_after_close(f.store.as_ref()).await;
            }
        }
    };
}

content_suite!(local, in_process);
content_suite!(grpc, through_grpc);
