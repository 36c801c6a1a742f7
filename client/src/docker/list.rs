//! `ps`: every container with its state, as Docker lists them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hull_proto::containerd::services::containers::v1::Container;
use hull_proto::containerd::services::tasks::v1::ListTasksRequest;
use hull_proto::containerd::v1::types::{Process, Status as TaskStatus};

use super::network::ports_of;
use super::spec::PortSpec;
use super::{labels, Docker};
use crate::Error;

/// What a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Made, never started (or its task is created but not started).
    Created,
    /// Its process runs.
    Running {
        /// Its pid on the host.
        pid: u32,
        /// When it started.
        started: Option<SystemTime>,
    },
    /// Frozen.
    Paused {
        /// Its pid on the host.
        pid: u32,
    },
    /// Its process exited.
    Exited {
        /// Exit code.
        code: u32,
        /// When.
        at: Option<SystemTime>,
    },
}

impl State {
    /// Docker's status word: created, running, paused, exited.
    pub fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running { .. } => "running",
            State::Paused { .. } => "paused",
            State::Exited { .. } => "exited",
        }
    }

    /// Docker's STATUS column: "Up 3 seconds", "Exited (127) 2 hours ago".
    pub fn describe(&self) -> String {
        let since = |t: &Option<SystemTime>| {
            t.map(|t| human_duration(SystemTime::now().duration_since(t).unwrap_or_default()))
        };
        match self {
            State::Created => "Created".into(),
            State::Running { started, .. } => match since(started) {
                Some(d) => format!("Up {d}"),
                None => "Up".into(),
            },
            State::Paused { .. } => "Up (Paused)".into(),
            State::Exited { code, at } => match since(at) {
                Some(d) => format!("Exited ({code}) {d} ago"),
                None => format!("Exited ({code})"),
            },
        }
    }

    /// The host pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        match self {
            State::Running { pid, .. } | State::Paused { pid } => Some(*pid),
            _ => None,
        }
    }
}

/// One row of `ps`.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    /// Full id.
    pub id: String,
    /// Name (without `/`).
    pub name: String,
    /// Image name as stored.
    pub image: String,
    /// The command (entrypoint and arguments).
    pub command: Vec<String>,
    /// When it was created.
    pub created: SystemTime,
    /// What it is doing.
    pub status: State,
    /// Published ports.
    pub ports: Vec<PortSpec>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The record.
    pub record: Container,
}

impl ContainerSummary {
    /// The 12-hex short id.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// Docker's human durations ("Less than a second", "About a minute",
/// "5 minutes", "2 hours", "3 days", …).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match s {
        0 => "Less than a second".into(),
        1..=59 => plural(s, "second"),
        60..=119 => "About a minute".into(),
        120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => plural(s / 3600, "hour"),
        172_800..=1_209_599 => plural(s / 86_400, "day"),
        1_209_600..=7_775_999 => plural(s / 604_800, "week"),
        7_776_000..=63_071_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

/// When process `pid` started, from `/proc`.
pub(crate) fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()??
        .max(1) as u64;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(btime)
            + Duration::from_millis(ticks * 1000 / hz),
    )
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    (*t).and_then(|t| SystemTime::try_from(t).ok())
}

/// The command a container's spec runs.
pub(crate) fn command_of(c: &Container) -> Vec<String> {
    c.spec
        .as_ref()
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
        .and_then(|v| serde_json::from_value(v["process"]["args"].clone()).ok())
        .unwrap_or_default()
}

pub(crate) fn state_of(c: &Container, task: Option<&Process>) -> State {
    match task {
        Some(p) if p.status == TaskStatus::Running as i32 => State::Running {
            pid: p.pid,
            started: process_start(p.pid),
        },
        Some(p)
            if p.status == TaskStatus::Paused as i32 || p.status == TaskStatus::Pausing as i32 =>
        {
            State::Paused { pid: p.pid }
        }
        Some(p) if p.status == TaskStatus::Stopped as i32 => State::Exited {
            code: p.exit_status,
            at: ts(&p.exited_at),
        },
        Some(_) => State::Created,
        None => match c.labels.get(labels::EXIT_CODE).and_then(|s| s.parse().ok()) {
            Some(code) => State::Exited {
                code,
                at: c
                    .labels
                    .get(labels::FINISHED_AT)
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
            },
            None => State::Created,
        },
    }
}

impl Docker {
    /// Containers, newest first; only running ones unless `all`.
    ///
    /// # Errors
    /// When the daemon cannot be asked.
    pub async fn list(&self, all: bool) -> Result<Vec<ContainerSummary>, Error> {
        let containers = self.all_containers().await?;
        let tasks: BTreeMap<String, Process> = self
            .client
            .tasks()
            .list(ListTasksRequest::default())
            .await?
            .into_inner()
            .tasks
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let mut out: Vec<ContainerSummary> = containers
            .into_iter()
            .map(|c| self.summary(c, &tasks))
            .filter(|s| all || matches!(s.status, State::Running { .. } | State::Paused { .. }))
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(out)
    }

    fn summary(&self, c: Container, tasks: &BTreeMap<String, Process>) -> ContainerSummary {
        let status = state_of(&c, tasks.get(&c.id));
        ContainerSummary {
            id: c.id.clone(),
            name: c
                .labels
                .get(labels::NAME)
                .cloned()
                .unwrap_or_else(|| c.id.clone()),
            image: c.image.clone(),
            command: command_of(&c),
            created: ts(&c.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
            status,
            ports: ports_of(&c.labels),
            labels: c.labels.clone(),
            record: c,
        }
    }

    /// One container's summary.
    ///
    /// # Errors
    /// NotFound.
    pub async fn summary_of(&self, key: &str) -> Result<ContainerSummary, Error> {
        let c = self.find(key).await?;
        let task = self.task_of(&c.id).await?;
        let mut tasks = BTreeMap::new();
        if let Some(t) = task {
            tasks.insert(c.id.clone(), t);
        }
        Ok(self.summary(c, &tasks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        let s = |n| human_duration(Duration::from_secs(n));
        assert_eq!(s(0), "Less than a second");
        assert_eq!(s(1), "1 second");
        assert_eq!(s(3), "3 seconds");
        assert_eq!(s(61), "About a minute");
        assert_eq!(s(300), "5 minutes");
        assert_eq!(s(3700), "About an hour");
        assert_eq!(s(7200), "2 hours");
        assert_eq!(s(3 * 86_400), "3 days");
        let started = State::Exited {
            code: 127,
            at: Some(SystemTime::now() - Duration::from_secs(7300)),
        };
        assert_eq!(started.describe(), "Exited (127) 2 hours ago");
        assert_eq!(State::Created.describe(), "Created");
    }

    #[test]
    fn this_process_has_a_start_time() {
        let t = process_start(std::process::id()).unwrap();
        let age = SystemTime::now().duration_since(t).unwrap();
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }
}
