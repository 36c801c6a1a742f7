//! What a local snapshotter keeps on disk, as a test counts it.
//!
//! Under `<snapshotter root>/snapshots` each snapshot is a numbered
//! directory; the snapshotter also keeps a few empty `spare-` directories
//! ready and removes removed snapshots' trees (`rm-`) in the background.

use std::path::Path;
use std::time::{Duration, Instant};

/// Every entry but the spares, sorted.
pub fn entries(snapshots: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(snapshots)
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("spare-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The number of snapshot directories (the numbered ones).
pub fn count(snapshots: &Path) -> usize {
    entries(snapshots)
        .iter()
        .filter(|n| n.parse::<u64>().is_ok())
        .count()
}

/// Waits until the entries other than spares are exactly `n` snapshots,
/// with no removal pending; panics with what is there after 20 s.
pub async fn settle_to(snapshots: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = entries(snapshots);
        if left.len() == n && count(snapshots) == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} snapshot directories under {}, found {left:?}",
            snapshots.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
