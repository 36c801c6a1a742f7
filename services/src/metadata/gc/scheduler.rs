//! When collections run: containerd's GC scheduler.
//!
//! Every metadata change is a *mutation*; a change that removed something
//! (a delete of an image, blob, container, lease, namespace or snapshot)
//! is also a *deletion*. Nothing is collected on a bare timer: an
//! unreferenced blob written without a lease stays until something else
//! calls for a collection, as in containerd. A collection runs:
//! - once at startup, unless `startup_delay` is zero. containerd runs it
//!   that long after its GC plugin starts, which is before its socket
//!   serves (its plugins take longer than that to load); hulld is ready in
//!   a few milliseconds, so it runs the startup collection before it
//!   accepts connections instead, where it cannot race a client's first
//!   writes (see [`startup`]);
//! - after a deletion, no sooner than `schedule_delay` and no sooner than
//!   the pause interval after the last collection (see below);
//! - right away (after `schedule_delay`) once `deletion_threshold`
//!   deletions (when not zero) have piled up;
//! - after `mutation_threshold` mutations (when not zero), interval-bound
//!   like a deletion.
//!
//! The interval keeps GC to at most `pause_threshold` of wall time: with
//! an average collection time `avg`, collections are at least
//! `avg / pause_threshold - avg` apart (containerd starts from one second).
//!
//! Unlike containerd's loop, an idle daemon sleeps: no timer ticks while
//! nothing is pending.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

/// `[gc]`: containerd's scheduler keys, with containerd's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Largest share of wall time collections may take (0 to 0.5).
    pub pause_threshold: f64,
    /// Deletions that trigger a collection at once; 0: any deletion
    /// triggers one, bound by the pause interval.
    pub deletion_threshold: u64,
    /// Mutations that trigger a collection; 0: mutations never do.
    pub mutation_threshold: u64,
    /// Delay between what triggers a collection and the collection, so
    /// that a burst is collected once ("0s", "100ms", "1m30s").
    #[serde(with = "go_duration")]
    pub schedule_delay: Duration,
    /// "0s": no collection at startup. Otherwise the startup collection
    /// runs before hulld accepts connections (containerd's delay, after
    /// which it collects, also ends before it serves).
    #[serde(with = "go_duration")]
    pub startup_delay: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: Duration::ZERO,
            startup_delay: Duration::from_millis(100),
        }
    }
}

impl GcConfig {
    /// Whether the values can work.
    ///
    /// # Errors
    /// A description of the first value that cannot.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(0.0..=0.5).contains(&self.pause_threshold) {
            return Err("gc.pause_threshold must be between 0 and 0.5");
        }
        Ok(())
    }
}

/// Durations written as containerd writes them (Go's `time.Duration`
/// text: "100ms", "1m30s"; a bare "0" too).
mod go_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.is_zero() {
            return s.serialize_str("0s");
        }
        s.serialize_str(&humantime::format_duration(*d).to_string().replace(' ', ""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("duration {text:?}: {e} (e.g. \"100ms\", \"1s\")"))
        })
    }
}

/// What happened since the last collection started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Metadata changes.
    pub mutations: u64,
    /// Changes that removed something.
    pub deletions: u64,
    /// A caller waits for a collection (a delete with `sync`).
    pub triggered: bool,
}

/// Collections started and finished, for callers that wait for one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    started: u64,
    finished: u64,
    /// Whether the last one finished without error.
    last_ok: bool,
}

/// The scheduler asked to collect and wait stopped first.
#[derive(Debug, thiserror::Error)]
#[error("garbage collection is not running")]
pub struct GcStopped;

impl hull_proto::errdefs::Classify for GcStopped {
    fn kind(&self) -> hull_proto::errdefs::Kind {
        hull_proto::errdefs::Kind::Unavailable
    }
}

/// A collection that was waited for failed.
#[derive(Debug, thiserror::Error)]
#[error("garbage collection failed; see the daemon's log")]
pub struct GcFailed;

impl hull_proto::errdefs::Classify for GcFailed {
    fn kind(&self) -> hull_proto::errdefs::Kind {
        hull_proto::errdefs::Kind::Unknown
    }
}

/// The metadata DB's side of the scheduler: it counts changes and wakes
/// the loop. Cheap enough to call on every change: the loop is woken only
/// when a count reaches a point where its decision can change (the first
/// deletion, a threshold), not for every change.
#[derive(Debug)]
pub struct GcSignal {
    activity: Mutex<Activity>,
    /// Mutation and deletion thresholds of the running scheduler.
    thresholds: Mutex<(u64, u64)>,
    wake: tokio::sync::Notify,
    progress: tokio::sync::watch::Sender<Progress>,
}

impl Default for GcSignal {
    fn default() -> Self {
        let d = GcConfig::default();
        GcSignal {
            activity: Mutex::default(),
            thresholds: Mutex::new((d.mutation_threshold, d.deletion_threshold)),
            wake: tokio::sync::Notify::new(),
            progress: tokio::sync::watch::Sender::new(Progress::default()),
        }
    }
}

impl GcSignal {
    /// Asks for a collection that starts after now, and waits for it
    /// (containerd's `ScheduleAndWait`, behind deletes with `sync`).
    /// Cancel-safe: dropping the future only gives up waiting.
    ///
    /// # Errors
    /// [`GcFailed`] when that collection failed; [`GcStopped`] when the
    /// scheduler stopped first.
    pub async fn schedule_and_wait(&self) -> Result<(), SyncError> {
        let mut rx = self.progress.subscribe();
        let target = rx.borrow().started + 1;
        self.activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .triggered = true;
        self.wake.notify_one();
        let p = *rx
            .wait_for(|p| p.finished >= target)
            .await
            .map_err(|_| SyncError::Stopped(GcStopped))?;
        if p.last_ok {
            Ok(())
        } else {
            Err(SyncError::Failed(GcFailed))
        }
    }

    fn started(&self) {
        self.progress.send_modify(|p| p.started += 1);
    }

    fn finished(&self, ok: bool) {
        self.progress.send_modify(|p| {
            p.finished = p.started;
            p.last_ok = ok;
        });
    }

    fn thresholds(&self) -> (u64, u64) {
        *self.thresholds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one metadata change.
    pub fn mutation(&self) {
        let (mutation_threshold, _) = self.thresholds();
        let n = {
            let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            a.mutations += 1;
            a.mutations
        };
        if mutation_threshold > 0 && n == mutation_threshold {
            self.wake.notify_one();
        }
    }

    /// Records that a change removed something.
    pub fn deletion(&self) {
        let (_, deletion_threshold) = self.thresholds();
        let n = {
            let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            a.deletions += 1;
            a.deletions
        };
        if n == 1 || n == deletion_threshold {
            self.wake.notify_one();
        }
    }

    fn peek(&self) -> Activity {
        *self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resets the activity as a collection starts.
    fn take(&self) -> Activity {
        std::mem::take(&mut *self.activity.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves at the next change (or at once if one came since the last
    /// wait). Cancel-safe.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

/// The decisions, apart from the clock and the collector.
#[derive(Debug)]
pub struct Policy {
    config: GcConfig,
    /// Least time between collections.
    interval: Duration,
    gc_time: Duration,
    collections: u32,
    last_end: Option<Instant>,
    /// When the next collection is due, if one is.
    next: Option<Instant>,
}

impl Policy {
    /// The policy of a scheduler started after the startup collection,
    /// if there was one.
    pub fn new(config: GcConfig, startup: Option<Collected>) -> Policy {
        let mut p = Policy {
            config,
            interval: Duration::from_secs(1),
            gc_time: Duration::ZERO,
            collections: 0,
            last_end: None,
            next: None,
        };
        if let Some(c) = startup {
            p.collected(c.took, c.end);
        }
        p
    }

    /// When the next collection is due.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Takes in the activity seen at `now`; moves the next collection
    /// earlier when the activity calls for one.
    pub fn on_activity(&mut self, a: Activity, now: Instant) {
        let c = &self.config;
        let soon = now + c.schedule_delay;
        let when =
            if a.triggered || (c.deletion_threshold > 0 && a.deletions >= c.deletion_threshold) {
                soon
            } else if a.deletions > 0
                || (c.mutation_threshold > 0 && a.mutations >= c.mutation_threshold)
            {
                match self.last_end {
                    Some(end) => soon.max(end + self.interval),
                    None => soon,
                }
            } else {
                return;
            };
        self.next = Some(self.next.map_or(when, |n| n.min(when)));
    }

    /// Records a collection that took `took` and ended at `end`.
    pub fn collected(&mut self, took: Duration, end: Instant) {
        self.gc_time += took;
        self.collections += 1;
        let p = self.config.pause_threshold;
        if p > 0.0 {
            let avg = self.gc_time.as_secs_f64() / f64::from(self.collections);
            self.interval = Duration::from_secs_f64((avg / p - avg).max(0.0));
        }
        self.last_end = Some(end);
        self.next = None;
    }
}

/// Why a collection that was waited for did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The scheduler stopped.
    #[error(transparent)]
    Stopped(GcStopped),
    /// The collection failed.
    #[error(transparent)]
    Failed(GcFailed),
}

impl hull_proto::errdefs::Classify for SyncError {
    fn kind(&self) -> hull_proto::errdefs::Kind {
        match self {
            SyncError::Stopped(e) => e.kind(),
            SyncError::Failed(e) => e.kind(),
        }
    }
}

/// One collection that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// How long it took.
    pub took: Duration,
    /// When it ended.
    pub end: Instant,
}

/// The startup collection, before hulld serves: runs `collect` unless
/// `startup_delay` is zero. What it returns goes to [`run`].
pub async fn startup<F, Fut>(signal: &GcSignal, config: &GcConfig, collect: F) -> Option<Collected>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if config.startup_delay.is_zero() {
        return None;
    }
    signal.take();
    signal.started();
    let start = Instant::now();
    let ok = collect().await;
    let end = Instant::now();
    signal.finished(ok);
    Some(Collected {
        took: end - start,
        end,
    })
}

/// Runs collections as the policy decides until `shutdown`, after the
/// startup collection (if one ran).
pub async fn run<F, Fut>(
    signal: &GcSignal,
    config: GcConfig,
    startup: Option<Collected>,
    shutdown: tokio_util::sync::CancellationToken,
    mut collect: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    *signal.thresholds.lock().unwrap_or_else(|p| p.into_inner()) =
        (config.mutation_threshold, config.deletion_threshold);
    let mut policy = Policy::new(config, startup);
    loop {
        let due = policy.next();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = signal.changed() => {
                policy.on_activity(signal.peek(), Instant::now());
                continue;
            }
            _ = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        // Changes from now on count towards the next collection.
        signal.take();
        signal.started();
        let started = Instant::now();
        let ok = collect().await;
        let end = Instant::now();
        signal.finished(ok);
        policy.collected(end - started, end);
        // What came in while collecting may call for another.
        policy.on_activity(signal.peek(), end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn defaults_are_containerds() {
        let c = GcConfig::default();
        assert_eq!(c.pause_threshold, 0.02);
        assert_eq!((c.deletion_threshold, c.mutation_threshold), (0, 100));
        assert_eq!(c.schedule_delay, Duration::ZERO);
        assert_eq!(c.startup_delay, Duration::from_millis(100));
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("schedule_delay = \"0s\""), "{text}");
        assert!(text.contains("startup_delay = \"100ms\""), "{text}");
        let back: GcConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let c: GcConfig =
            toml::from_str("schedule_delay = \"1m30s\"\nstartup_delay = \"0\"").unwrap();
        assert_eq!(c.schedule_delay, Duration::from_secs(90));
        assert!(c.startup_delay.is_zero());
        assert!(toml::from_str::<GcConfig>("schedule_delay = \"soon\"").is_err());
        assert!(GcConfig {
            pause_threshold: 0.9,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn no_collection_without_deletions_or_enough_mutations() {
        let t0 = Instant::now();
        let mut p = Policy::new(
            GcConfig::default(),
            Some(Collected {
                took: Duration::from_millis(2),
                end: at(t0, 102),
            }),
        );
        assert_eq!(p.next(), None);
        p.on_activity(
            Activity {
                mutations: 99,
                deletions: 0,
                ..Default::default()
            },
            at(t0, 5_000),
        );
        assert_eq!(p.next(), None, "99 writes are not enough");
        p.on_activity(
            Activity {
                mutations: 100,
                deletions: 0,
                ..Default::default()
            },
            at(t0, 6_000),
        );
        assert_eq!(p.next(), Some(at(t0, 6_000)));
    }

    #[test]
    fn deletions_wait_for_the_pause_interval() {
        let t0 = Instant::now();
        let mut p = Policy::new(GcConfig::default(), None);
        // A 10 ms collection: at most 2% of the time, so 490 ms apart.
        p.collected(Duration::from_millis(10), at(t0, 110));
        let one = Activity {
            mutations: 1,
            deletions: 1,
            ..Default::default()
        };
        p.on_activity(one, at(t0, 200));
        assert_eq!(p.next(), Some(at(t0, 600)));
        p.on_activity(one, at(t0, 2_000));
        assert_eq!(p.next(), Some(at(t0, 600)), "never later than planned");
        // A threshold of deletions does not wait.
        let mut p = Policy::new(
            GcConfig {
                deletion_threshold: 5,
                schedule_delay: Duration::from_millis(30),
                startup_delay: Duration::ZERO,
                ..Default::default()
            },
            None,
        );
        assert_eq!(p.next(), None);
        p.collected(Duration::from_millis(10), at(t0, 0));
        p.on_activity(
            Activity {
                mutations: 5,
                deletions: 5,
                ..Default::default()
            },
            at(t0, 10),
        );
        assert_eq!(p.next(), Some(at(t0, 40)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_collects_what_the_policy_says() {
        let signal = std::sync::Arc::new(GcSignal::default());
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let count = || runs.load(std::sync::atomic::Ordering::SeqCst);
        let bump = || {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { true }
        };
        let last = startup(&signal, &GcConfig::default(), bump).await;
        assert_eq!(count(), 1, "startup collection");
        let none = GcConfig {
            startup_delay: Duration::ZERO,
            ..Default::default()
        };
        assert!(startup(&signal, &none, bump).await.is_none());
        assert_eq!(count(), 1, "no startup collection when the delay is 0");
        let task = {
            let (signal, runs, stop) = (signal.clone(), runs.clone(), stop.clone());
            tokio::spawn(async move {
                run(&signal, GcConfig::default(), last, stop, || {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { true }
                })
                .await;
            })
        };
        for _ in 0..10 {
            signal.mutation();
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(count(), 1, "writes alone do not collect");
        for _ in 0..90 {
            signal.mutation();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count(), 2, "the 100th write does");
        signal.deletion();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count(), 3, "a deletion does");
        // A caller waiting gets a collection of its own at once.
        signal.schedule_and_wait().await.unwrap();
        assert_eq!(count(), 4);
        stop.cancel();
        task.await.unwrap();
    }
}
