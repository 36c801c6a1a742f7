//! ContainerStats, ListContainerStats, PodSandboxStats,
//! ListPodSandboxStats: from the cgroup statistics the shims report (runc's,
//! the same on cgroup v1 and v2), the writable layer's usage, and the pod's
//! network counters. A container that goes away mid-list is left out, not
//! an error.

use std::collections::HashMap;

use hull_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use hull_proto::containerd::services::tasks::v1::MetricsRequest;
use hull_proto::io::containerd::cgroups::v1 as cg;
use hull_proto::runtime::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage,
    PodSandboxAttributes, PodSandboxStats, PodSandboxStatsFilter, ProcessUsage, UInt64Value,
};
use prost::Message;
use tonic::Status;

use super::container::cri_state;
use super::store::Container;
use super::{request, Cri};
use hull_proto::runtime::v1::ContainerState as CriState;

fn u64v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// One sample of a cgroup: (time, cpu ns used, memory).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: i64,
    cpu: u64,
}

/// CPU in nanocores between two samples.
fn nano_cores(prev: Sample, now: Sample) -> Option<u64> {
    let dt = now.at.checked_sub(prev.at).filter(|d| *d > 0)?;
    let used = now.cpu.checked_sub(prev.cpu)?;
    Some((u128::from(used) * 1_000_000_000 / dt as u128) as u64)
}

/// The CRI memory figures from cgroup statistics: the working set is the
/// usage less inactive file pages, as the kubelet counts it.
fn memory(m: &cg::MemoryStat, at: i64) -> MemoryUsage {
    let usage = m.usage.as_ref().map_or(0, |u| u.usage);
    let inactive = m.total_inactive_file.max(m.inactive_file);
    let limit = m.usage.as_ref().map_or(0, |u| u.limit);
    let working = usage.saturating_sub(inactive);
    MemoryUsage {
        timestamp: at,
        working_set_bytes: u64v(working),
        available_bytes: (limit > 0 && limit < u64::MAX / 2).then(|| UInt64Value {
            value: limit.saturating_sub(working),
        }),
        usage_bytes: u64v(usage),
        rss_bytes: u64v(m.total_rss.max(m.rss)),
        page_faults: u64v(m.total_pg_fault.max(m.pg_fault)),
        major_page_faults: u64v(m.total_pg_maj_fault.max(m.pg_maj_fault)),
        psi: None,
    }
}

/// Network counters of the pod's interfaces, read in its namespace
/// through its pause process.
fn network(pid: u32, at: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 11 {
            continue;
        }
        interfaces.push(NetworkInterfaceUsage {
            name: name.to_owned(),
            rx_bytes: u64v(v[0]),
            rx_errors: u64v(v[2]),
            tx_bytes: u64v(v[8]),
            tx_errors: u64v(v[10]),
        });
    }
    let default_interface = interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .or(interfaces.first())
        .cloned();
    Some(NetworkUsage {
        timestamp: at,
        default_interface,
        interfaces,
    })
}

impl Cri {
    /// Cgroup statistics of every task in CRI's namespace, by id.
    async fn metrics(&self) -> Result<HashMap<String, (i64, cg::Metrics)>, Status> {
        let resp = self
            .tasks
            .metrics(request(MetricsRequest::default()))
            .await?
            .into_inner();
        let mut out = HashMap::new();
        for m in resp.metrics {
            let Some(data) = m.data else { continue };
            let Ok(stats) = cg::Metrics::decode(data.value.as_slice()) else {
                continue;
            };
            let at = m
                .timestamp
                .map(|t| super::nanos(&t))
                .unwrap_or_else(crate::now_nanos);
            out.insert(m.id, (at, stats));
        }
        Ok(out)
    }

    fn cpu(&self, id: &str, at: i64, m: &cg::Metrics) -> CpuUsage {
        let total = m
            .cpu
            .as_ref()
            .and_then(|c| c.usage.as_ref())
            .map_or(0, |u| u.total);
        let now = Sample { at, cpu: total };
        let prev = self
            .cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), (now.at, now.cpu));
        CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: u64v(total),
            usage_nano_cores: prev
                .and_then(|(at, cpu)| nano_cores(Sample { at, cpu }, now))
                .map(|value| UInt64Value { value }),
            psi: None,
        }
    }

    async fn container_stats_of(
        &self,
        c: &Container,
        metrics: &HashMap<String, (i64, cg::Metrics)>,
    ) -> ContainerStats {
        let attributes = Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        });
        let now = crate::now_nanos();
        let (cpu, mem) = match metrics.get(&c.id) {
            Some((at, m)) => (
                Some(self.cpu(&c.id, *at, m)),
                m.memory.as_ref().map(|mm| memory(mm, *at)),
            ),
            None => (None, None),
        };
        let writable_layer =
            self.snapshot_usage(&c.id)
                .await
                .map(|(bytes, inodes)| FilesystemUsage {
                    timestamp: now,
                    fs_id: Some(FilesystemIdentifier {
                        mountpoint: self.snapshots_root.display().to_string(),
                    }),
                    used_bytes: u64v(bytes),
                    inodes_used: u64v(inodes),
                });
        ContainerStats {
            attributes,
            cpu,
            memory: mem,
            writable_layer,
            swap: None,
            io: None,
        }
    }

    /// ContainerStats.
    pub(super) async fn container_stats(&self, prefix: &str) -> Result<ContainerStats, Status> {
        let c = self.find_container(prefix)?;
        let metrics = if cri_state(&c.state) == CriState::ContainerRunning {
            self.metrics().await?
        } else {
            HashMap::new()
        };
        Ok(self.container_stats_of(&c, &metrics).await)
    }

    /// ListContainerStats with its filter.
    pub(super) async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, Status> {
        let f = filter.unwrap_or_default();
        let metrics = self.metrics().await?;
        let mut out = Vec::new();
        for c in self.store.containers() {
            if !(f.id.is_empty() || c.id.starts_with(&f.id))
                || !(f.pod_sandbox_id.is_empty()
                    || c.state.sandbox_id.starts_with(&f.pod_sandbox_id))
                || !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            {
                continue;
            }
            // Removed meanwhile: left out.
            if self.store.container(&c.id).is_none() {
                continue;
            }
            out.push(self.container_stats_of(&c, &metrics).await);
        }
        Ok(out)
    }

    async fn pod_stats_of(
        &self,
        sandbox: &super::store::Sandbox,
        metrics: &HashMap<String, (i64, cg::Metrics)>,
    ) -> PodSandboxStats {
        let now = crate::now_nanos();
        let mut containers = Vec::new();
        let (mut cpu_total, mut mem_usage, mut working, mut rss) = (0u64, 0u64, 0u64, 0u64);
        let mut processes = 0u64;
        let mut ids = vec![sandbox.id.clone()];
        for c in self.store.containers_of(&sandbox.id) {
            ids.push(c.id.clone());
            let s = self.container_stats_of(&c, metrics).await;
            containers.push(s);
        }
        for id in &ids {
            if let Some((_, m)) = metrics.get(id) {
                cpu_total += m
                    .cpu
                    .as_ref()
                    .and_then(|c| c.usage.as_ref())
                    .map_or(0, |u| u.total);
                if let Some(mm) = &m.memory {
                    let u = memory(mm, now);
                    mem_usage += u.usage_bytes.map_or(0, |v| v.value);
                    working += u.working_set_bytes.map_or(0, |v| v.value);
                    rss += u.rss_bytes.map_or(0, |v| v.value);
                }
                processes += m.pids.as_ref().map_or(0, |p| p.current);
            }
        }
        let key = format!("pod:{}", sandbox.id);
        let sample = Sample {
            at: now,
            cpu: cpu_total,
        };
        let prev = self
            .cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (sample.at, sample.cpu));
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: sandbox.id.clone(),
                metadata: sandbox.config.metadata.clone(),
                labels: sandbox.config.labels.clone(),
                annotations: sandbox.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: u64v(cpu_total),
                    usage_nano_cores: prev
                        .and_then(|(at, cpu)| nano_cores(Sample { at, cpu }, sample))
                        .map(|value| UInt64Value { value }),
                    psi: None,
                }),
                memory: Some(MemoryUsage {
                    timestamp: now,
                    working_set_bytes: u64v(working),
                    usage_bytes: u64v(mem_usage),
                    rss_bytes: u64v(rss),
                    ..Default::default()
                }),
                network: (sandbox.state.pid > 0 && sandbox.state.netns.is_some())
                    .then(|| network(sandbox.state.pid, now))
                    .flatten(),
                process: Some(ProcessUsage {
                    timestamp: now,
                    process_count: u64v(processes),
                }),
                containers,
                io: None,
            }),
            windows: None,
        }
    }

    /// PodSandboxStats.
    pub(super) async fn pod_sandbox_stats(&self, prefix: &str) -> Result<PodSandboxStats, Status> {
        let sandbox = self.find_sandbox(prefix)?;
        let metrics = self.metrics().await?;
        Ok(self.pod_stats_of(&sandbox, &metrics).await)
    }

    /// ListPodSandboxStats with its filter.
    pub(super) async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>, Status> {
        let f = filter.unwrap_or_default();
        let metrics = self.metrics().await?;
        let mut out = Vec::new();
        for s in self.store.sandboxes() {
            if !(f.id.is_empty() || s.id.starts_with(&f.id))
                || !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| s.config.labels.get(k) == Some(v))
            {
                continue;
            }
            out.push(self.pod_stats_of(&s, &metrics).await);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_and_working_set() {
        let a = Sample { at: 0, cpu: 0 };
        let b = Sample {
            at: 2_000_000_000,
            cpu: 1_000_000_000,
        };
        assert_eq!(nano_cores(a, b), Some(500_000_000));
        assert_eq!(nano_cores(b, a), None);
        let m = cg::MemoryStat {
            usage: Some(cg::MemoryEntry {
                usage: 100,
                limit: 1000,
                ..Default::default()
            }),
            total_inactive_file: 30,
            ..Default::default()
        };
        let u = memory(&m, 1);
        assert_eq!(u.working_set_bytes.unwrap().value, 70);
        assert_eq!(u.available_bytes.unwrap().value, 930);
    }
}
