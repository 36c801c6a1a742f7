//! The content service through `ctr content ...` and a raw `Write` stream.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest as _, Sha256};

use hull_proto::containerd::services::content::v1::{
    AbortRequest, InfoRequest, ListContentRequest, ReadContentRequest, StatusRequest, WriteAction,
    WriteContentRequest,
};
use hull_tests::blobs::{write_blob, Ingest};
use hull_tests::daemon::{eventually, Daemon};
use hull_tests::image::sha256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_content_round_trip() {
    let d = Daemon::start("content").await;
    let data = b"hello from hull\n";
    let mut child = d
        .ctr()
        .args(["content", "ingest", "greeting"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ctr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    assert!(child.wait().expect("wait").success());
    let digest = sha256(data);

    let ls = d.ctr_ok(&["content", "ls"]);
    assert!(ls.contains(&digest) && ls.contains("16B"), "{ls}");
    assert_eq!(d.ctr_ok(&["content", "get", &digest]).as_bytes(), data);

    d.ctr_ok(&[
        "content",
        "label",
        &digest,
        "purpose=test",
        "containerd.io/gc.root=now",
    ]);
    let ls = d.ctr_ok(&["content", "ls"]);
    assert!(ls.contains("purpose=test"), "{ls}");
    let c = d.client().await;
    let list = |filters: Vec<String>| {
        let c = c.clone();
        async move {
            let mut s = c
                .content()
                .list(ListContentRequest { filters })
                .await
                .expect("list")
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await.expect("list") {
                out.extend(m.info.into_iter().map(|i| i.digest));
            }
            out
        }
    };
    assert_eq!(
        list(vec!["labels.purpose==test".into()]).await,
        vec![digest.clone()]
    );
    assert_eq!(
        list(vec![r#"labels."containerd.io/gc.root""#.into()]).await,
        vec![digest.clone()]
    );
    assert!(list(vec!["labels.purpose==other".into()]).await.is_empty());
    assert_eq!(
        list(vec![format!("digest=={digest}")]).await,
        vec![digest.clone()]
    );
    d.ctr_ok(&["content", "label", &digest, "purpose="]);
    assert!(!d.ctr_ok(&["content", "ls"]).contains("purpose=test"));

    // Nothing is active once committed.
    assert!(!d.ctr_ok(&["content", "active"]).contains("greeting"));

    d.ctr_ok(&["content", "rm", &digest]);
    assert!(!d.ctr_ok(&["content", "ls"]).contains(&digest));
    let got = d.ctr_run(&["content", "get", &digest]);
    assert!(!got.status.success());
    assert!(String::from_utf8_lossy(&got.stderr).contains("not found"));
    // GC removes the file once no namespace records the blob.
    let d2 = &d;
    assert!(
        eventually(Duration::from_secs(5), || !d2
            .blob_files()
            .contains(&digest))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_content_active_shows_unfinished_ingest() {
    let d = Daemon::start("active").await;
    let c = d.client().await;
    let (mut ing, _) = Ingest::open(&c, "half-done").await.expect("open");
    ing.write(0, vec![7u8; 1000]).await.expect("write");
    drop(ing);
    let d2 = &d;
    assert!(
        eventually(Duration::from_secs(5), || {
            let out = d2.ctr_ok(&["content", "active"]);
            out.lines()
                .any(|l| l.starts_with("half-done") && l.contains("1kB"))
        })
        .await,
        "{}",
        d.ctr_ok(&["content", "active"])
    );
}

fn chunk(i: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for w in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
    }
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_blob_resumes_after_writer_is_killed() {
    const CHUNKS: u64 = 1024; // 1 GiB
    let d = Daemon::start("resume").await;
    let mut hasher = Sha256::new();
    for i in 0..CHUNKS {
        hasher.update(chunk(i));
    }
    let digest = format!("sha256:{:x}", hasher.finalize());
    let total = (CHUNKS << 20) as i64;

    // First writer: a real ctr, fed half the data, then SIGKILLed.
    let mut ctr = d
        .ctr()
        .args([
            "content",
            "ingest",
            "--expected-size",
            &total.to_string(),
            "--expected-digest",
            &digest,
            "big",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ctr");
    let mut stdin = ctr.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        for i in 0..CHUNKS / 2 {
            if stdin.write_all(&chunk(i)).is_err() {
                return;
            }
        }
        // Keep the pipe open until the reader dies.
        std::thread::sleep(Duration::from_secs(30));
        drop(stdin);
    });
    let c = d.client().await;
    let half = total / 2;
    let mut reached = false;
    for _ in 0..600 {
        if let Ok(st) = c
            .content()
            .status(StatusRequest {
                r#ref: "big".into(),
            })
            .await
        {
            let st = st.into_inner().status.expect("status");
            assert_eq!(st.total, total);
            if st.offset >= half - (4 << 20) {
                reached = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reached, "first writer never got half way");
    // The ctr child this test spawned.
    let _ = kill(Pid::from_raw(ctr.id() as i32), Signal::SIGKILL);
    let _ = ctr.wait();
    drop(writer);

    // The ingest survives its writer, with a reported offset.
    let offset = {
        let c = c.clone();
        let mut offset = 0;
        // The server notices the dead stream and releases the ref.
        for _ in 0..100 {
            match Ingest::open(&c, "big").await {
                Ok((_, stat)) => {
                    offset = stat.offset;
                    break;
                }
                Err(e) if e.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        offset
    };
    assert!(offset > 0 && offset <= half, "offset {offset}");
    assert_eq!(
        offset % (1 << 20),
        0,
        "ctr writes whole chunks; offset {offset}"
    );

    // Second writer resumes from that offset and commits.
    let (mut ing, stat) = Ingest::open(&c, "big").await.expect("resume");
    assert_eq!(stat.offset, offset);
    // A STAT without a total keeps the total the first writer gave.
    assert_eq!(stat.total, total);
    let mut at = offset;
    for i in (offset as u64 >> 20)..CHUNKS {
        let resp = ing.write(at, chunk(i)).await.expect("write");
        at = resp.offset;
    }
    let resp = ing.commit(at, total, &digest).await.expect("commit");
    assert_eq!(resp.digest, digest);

    let info = c
        .content()
        .info(InfoRequest {
            digest: digest.clone(),
        })
        .await
        .expect("info")
        .into_inner()
        .info
        .expect("info");
    assert_eq!(info.size, total);
    // Read back a slice in the middle and check it.
    let mut stream = c
        .content()
        .read(ReadContentRequest {
            digest: digest.clone(),
            offset: (700 << 20) + 5,
            size: 100,
        })
        .await
        .expect("read")
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.expect("read") {
        got.extend(m.data);
    }
    assert_eq!(got, chunk(700)[5..105].to_vec());
    // The whole file on disk hashes to the digest.
    let path = d.root().join("content/blobs/sha256").join(&digest[7..]);
    let mut f = std::fs::File::open(path).expect("blob");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash");
    assert_eq!(format!("sha256:{:x}", h.finalize()), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_wrong_size_or_digest_stores_nothing() {
    let d = Daemon::start("verify").await;
    let c = d.client().await;
    let data = b"abcdef".to_vec();
    let real = sha256(&data);
    let wrong = sha256(b"something else");

    let (mut ing, _) = Ingest::open(&c, "v").await.expect("open");
    ing.write(0, data.clone()).await.expect("write");
    let err = ing.commit(6, 7, &real).await.expect_err("size mismatch");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("unexpected commit size"), "{err}");
    drop(ing);

    let (mut ing, stat) = reopen(&c, "v").await;
    assert_eq!(stat.offset, 6);
    let err = ing
        .send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset: 6,
            total: 6,
            expected: wrong.clone(),
            ..Default::default()
        })
        .await
        .expect_err("digest mismatch");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("unexpected commit digest"), "{err}");
    drop(ing);

    for dg in [&real, &wrong] {
        let e = c
            .content()
            .info(InfoRequest { digest: dg.clone() })
            .await
            .expect_err("nothing stored");
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(!d.blob_files().contains(dg));
    }
    // The ingest is still there to inspect or abort.
    let _ = reopen(&c, "v").await;
    c.content()
        .abort(AbortRequest { r#ref: "v".into() })
        .await
        .expect("abort");
    let e = c
        .content()
        .status(StatusRequest { r#ref: "v".into() })
        .await
        .expect_err("aborted");
    assert_eq!(e.code(), tonic::Code::NotFound);
}

async fn reopen(
    c: &hull_client::Client,
    r: &str,
) -> (
    Ingest,
    hull_proto::containerd::services::content::v1::WriteContentResponse,
) {
    for _ in 0..100 {
        match Ingest::open(c, r).await {
            Ok(x) => return x,
            Err(e) if e.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("reopen {r}: {e}"),
        }
    }
    panic!("ref {r} stayed locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_ref_and_offsets_are_checked() {
    let d = Daemon::start("locks").await;
    let c = d.client().await;
    let (mut first, _) = Ingest::open(&c, "shared").await.expect("open");
    first.write(0, b"abc".to_vec()).await.expect("write");
    let err = Ingest::open(&c, "shared")
        .await
        .err()
        .expect("second writer refused");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("locked"), "{err}");

    let err = first
        .write(10, b"x".to_vec())
        .await
        .expect_err("bad offset");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

    // Another ref is independent, and an existing blob is AlreadyExists.
    let digest = write_blob(&c, "other", b"payload")
        .await
        .expect("write blob");
    let err = write_blob(&c, "again", b"payload")
        .await
        .expect_err("exists");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err}");
    assert_eq!(digest, sha256(b"payload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_honours_offset_and_size() {
    let d = Daemon::start("read").await;
    let c = d.client().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    let digest = write_blob(&c, "r", &data).await.expect("write");
    let read = |offset: i64, size: i64| {
        let c = c.clone();
        let digest = digest.clone();
        async move {
            let mut s = c
                .content()
                .read(ReadContentRequest {
                    digest,
                    offset,
                    size,
                })
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await? {
                out.extend(m.data);
            }
            Ok::<_, tonic::Status>(out)
        }
    };
    assert_eq!(read(0, 0).await.expect("all"), data);
    assert_eq!(read(10, 20).await.expect("slice"), data[10..30].to_vec());
    assert_eq!(
        read((3 << 20) - 5, 100).await.expect("tail"),
        data[(3 << 20) - 5..].to_vec()
    );
    assert_eq!(
        read(3 << 20, 0).await.expect("empty at end"),
        Vec::<u8>::new()
    );
    let err = read((3 << 20) + 1, 0).await.expect_err("past end");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
}
