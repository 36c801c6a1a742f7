//! The restart monitor: keeps containers labelled
//! `containerd.io/restart.status=running` running, as containerd's restart
//! plugin does, with Docker's policies and backoff.
//!
//! It is a client of hulld's own Tasks and Containers services (called in
//! process, with the namespace header a remote client would send), so a
//! restart is exactly what a client's create-and-start would be, events
//! included. It acts when a task exits and on a periodic sweep, which also
//! covers what happened while hulld was down.
//!
//! Labels read: `containerd.io/restart.status` (`running` or `stopped`:
//! only `running` containers are restarted), `.policy` (`always`,
//! `unless-stopped`, `on-failure[:N]`, `no`; none means `always`),
//! `.explicitly-stopped`, `.loguri` or `.logpath` (the new task's stdio).
//! Written: `.count`, one more per restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hull_proto::containerd::services::containers::v1::containers_server::Containers;
use hull_proto::containerd::services::containers::v1::{
    Container as WireContainer, UpdateContainerRequest,
};
use hull_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use hull_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, StartRequest,
};
use hull_proto::containerd::v1::types::Status as TaskStatus;
use hull_proto::errdefs::Kind;
use hull_proto::headers;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::api::containers::ContainersService;
use crate::api::tasks::TasksService;
use crate::events::Exchange;
use crate::filters::Filter;
use crate::metadata::containers::Container;
use crate::metadata::MetaDb;

/// The desired state label.
pub const STATUS: &str = "containerd.io/restart.status";
/// The policy label.
pub const POLICY: &str = "containerd.io/restart.policy";
/// Set when a person stopped the container.
pub const EXPLICITLY_STOPPED: &str = "containerd.io/restart.explicitly-stopped";
/// Restarts so far.
pub const COUNT: &str = "containerd.io/restart.count";
/// The stdio URI of a restarted task.
pub const LOGURI: &str = "containerd.io/restart.loguri";
/// A log file path for a restarted task's stdio (older clients).
pub const LOGPATH: &str = "containerd.io/restart.logpath";

/// How often every container is looked at besides task exits.
const SWEEP: Duration = Duration::from_secs(2);
/// First delay between restarts; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a container made or changed without a task is left to its
/// client before the monitor creates one.
const CLIENT_GRACE: Duration = Duration::from_secs(10);
/// A container that ran this long is healthy again: its delay resets.
const HEALTHY: Duration = Duration::from_secs(10);

/// When a container with these labels that exited with `exit` is
/// restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Never.
    No,
    /// Always.
    Always,
    /// Unless a person stopped it.
    UnlessStopped,
    /// On a non-zero exit, at most N times (0: no limit).
    OnFailure(u32),
}

impl Policy {
    /// Reads the policy label (none: always, as containerd).
    pub fn parse(label: Option<&str>) -> Option<Policy> {
        let Some(text) = label else {
            return Some(Policy::Always);
        };
        let (name, max) = text.split_once(':').unwrap_or((text, ""));
        match name {
            "" | "always" => Some(Policy::Always),
            "no" => Some(Policy::No),
            "unless-stopped" => Some(Policy::UnlessStopped),
            "on-failure" if max.is_empty() => Some(Policy::OnFailure(0)),
            "on-failure" => max.parse().ok().map(Policy::OnFailure),
            _ => None,
        }
    }

    /// Whether a container that exited with `exit` after `count`
    /// restarts is restarted.
    pub fn restarts(self, exit: u32, count: u32, explicitly_stopped: bool) -> bool {
        match self {
            Policy::No => false,
            Policy::Always => true,
            Policy::UnlessStopped => !explicitly_stopped,
            Policy::OnFailure(max) => exit != 0 && (max == 0 || count < max),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    not_before: Instant,
    started: Instant,
}

/// The monitor.
pub struct RestartMonitor {
    db: Arc<MetaDb>,
    tasks: Arc<TasksService>,
    containers: Arc<ContainersService>,
    events: Exchange,
    backoff: HashMap<(String, String), Backoff>,
}

fn request<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert(headers::NAMESPACE, v);
    }
    r
}

fn code_kind(s: &tonic::Status) -> Kind {
    Kind::from_code(s.code() as i32)
}

impl RestartMonitor {
    /// A monitor over hulld's stores and services.
    pub fn new(
        db: Arc<MetaDb>,
        tasks: Arc<TasksService>,
        containers: Arc<ContainersService>,
        events: Exchange,
    ) -> RestartMonitor {
        RestartMonitor {
            db,
            tasks,
            containers,
            events,
            backoff: HashMap::new(),
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut exits = self.events.subscribe();
        loop {
            let wake = self.sweep().await;
            let wait = wake.unwrap_or(SWEEP).min(SWEEP);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = exits.recv() => {
                    match ev {
                        Ok(e) if e.topic != "/tasks/exit" => continue,
                        // A burst of events dropped: sweep anyway.
                        _ => {}
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Looks at every monitored container; returns how soon the next
    /// backed-off restart is due.
    async fn sweep(&mut self) -> Option<Duration> {
        let db = self.db.clone();
        let found = crate::blocking(
            move || -> Result<Vec<(String, Container)>, crate::metadata::MetadataError> {
                let mut out = Vec::new();
                let Ok(all) = Filter::parse::<&str>(&[]) else {
                    return Ok(out);
                };
                for ns in db.list_namespaces()? {
                    for c in db.list_containers(&ns.name, &all)? {
                        if c.labels.get(STATUS).map(String::as_str) == Some("running") {
                            out.push((ns.name.to_string(), c));
                        }
                    }
                }
                Ok(out)
            },
        )
        .await;
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "restart monitor cannot list containers");
                return None;
            }
        };
        let live: std::collections::HashSet<(String, String)> = found
            .iter()
            .map(|(ns, c)| (ns.clone(), c.id.clone()))
            .collect();
        self.backoff.retain(|k, _| live.contains(k));
        let mut next: Option<Duration> = None;
        for (ns, c) in found {
            if let Some(due) = self.reconcile(&ns, &c).await {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    /// Restarts `c` if its policy says so; returns how long until a
    /// backed-off restart may happen.
    async fn reconcile(&mut self, ns: &str, c: &Container) -> Option<Duration> {
        let key = (ns.to_owned(), c.id.clone());
        let task = match self
            .tasks
            .get(request(
                ns,
                GetRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                },
            ))
            .await
        {
            Ok(r) => r.into_inner().process,
            Err(s) if code_kind(&s) == Kind::NotFound => None,
            Err(s) => {
                tracing::warn!(ns, id = %c.id, error = %s.message(), "restart monitor cannot get the task");
                return None;
            }
        };
        let exit = match &task {
            Some(p) if p.status == TaskStatus::Stopped as i32 => p.exit_status,
            Some(_) => {
                // Running (or being created): healthy after a while.
                if let Some(b) = self.backoff.get(&key) {
                    if b.started.elapsed() >= HEALTHY {
                        self.backoff.remove(&key);
                    }
                }
                return None;
            }
            // No task: its shim died while hulld was down (a failure), or
            // the client that made the container is about to create it;
            // give a fresh container that long before stepping in.
            None => {
                let age = Duration::from_nanos(
                    crate::now_nanos().saturating_sub(c.updated_at).max(0) as u64,
                );
                if age < CLIENT_GRACE {
                    return Some(CLIENT_GRACE - age);
                }
                255
            }
        };
        let Some(policy) = Policy::parse(c.labels.get(POLICY).map(String::as_str)) else {
            tracing::warn!(ns, id = %c.id, policy = ?c.labels.get(POLICY), "unknown restart policy");
            return None;
        };
        let count: u32 = c
            .labels
            .get(COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let stopped = c
            .labels
            .get(EXPLICITLY_STOPPED)
            .is_some_and(|v| v == "true");
        if !policy.restarts(exit, count, stopped) {
            return None;
        }
        let now = Instant::now();
        if let Some(b) = self.backoff.get(&key) {
            if now < b.not_before {
                return Some(b.not_before - now);
            }
        }
        let delay = self
            .backoff
            .get(&key)
            .map_or(FIRST_DELAY, |b| (b.delay * 2).min(MAX_DELAY));
        self.backoff.insert(
            key,
            Backoff {
                delay,
                not_before: now + delay,
                started: now,
            },
        );
        match self.restart(ns, c, task.is_some(), count).await {
            Ok(()) => {
                tracing::info!(ns, id = %c.id, exit, restarts = count + 1, "restarted container")
            }
            Err(e) => tracing::warn!(ns, id = %c.id, error = %e.message(), "restart failed"),
        }
        Some(delay)
    }

    async fn restart(
        &self,
        ns: &str,
        c: &Container,
        has_task: bool,
        count: u32,
    ) -> Result<(), tonic::Status> {
        if has_task {
            match self
                .tasks
                .delete(request(
                    ns,
                    DeleteTaskRequest {
                        container_id: c.id.clone(),
                    },
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if code_kind(&s) == Kind::NotFound => {}
                Err(s) => return Err(s),
            }
        }
        let stdio = match (c.labels.get(LOGURI), c.labels.get(LOGPATH)) {
            (Some(uri), _) => uri.clone(),
            (None, Some(path)) => format!("file://{path}"),
            (None, None) => String::new(),
        };
        let terminal = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
            .and_then(|v| v["process"]["terminal"].as_bool())
            .unwrap_or(false);
        self.tasks
            .create(request(
                ns,
                CreateTaskRequest {
                    container_id: c.id.clone(),
                    stdout: stdio.clone(),
                    stderr: if terminal { String::new() } else { stdio },
                    terminal,
                    ..Default::default()
                },
            ))
            .await?;
        self.tasks
            .start(request(
                ns,
                StartRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                },
            ))
            .await?;
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(COUNT.to_owned(), (count + 1).to_string());
        self.containers
            .update(request(
                ns,
                UpdateContainerRequest {
                    container: Some(WireContainer {
                        id: c.id.clone(),
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![format!("labels.{COUNT}")],
                    }),
                },
            ))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_as_docker_and_containerd_read_them() {
        assert_eq!(Policy::parse(None), Some(Policy::Always));
        assert_eq!(
            Policy::parse(Some("on-failure:3")),
            Some(Policy::OnFailure(3))
        );
        assert_eq!(Policy::parse(Some("bogus")), None);
        let f = Policy::OnFailure(3);
        assert!(f.restarts(1, 2, false));
        assert!(!f.restarts(1, 3, false), "three restarts at most");
        assert!(!f.restarts(0, 0, false), "a clean exit is not a failure");
        assert!(Policy::Always.restarts(0, 100, true));
        assert!(!Policy::UnlessStopped.restarts(1, 0, true));
        assert!(!Policy::No.restarts(1, 0, false));
    }
}
