//! Cgroup statistics from `runc events --stats`, in containerd's cgroup v1
//! metrics message.
//!
//! The event's `data` is runc's own document (libcontainer's `types.Stats`),
//! typed here with the fields hull reports; what runc adds beyond them is
//! ignored, and what it leaves out reads as zero.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use hull_proto::io::containerd::cgroups::v1 as cg;

/// One `runc events --stats` line.
#[derive(Debug, Default, Deserialize)]
pub struct Event {
    /// The statistics.
    #[serde(default)]
    pub data: Stats,
}

/// runc's statistics of one container.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    pids: Option<Pids>,
    hugetlb: Option<BTreeMap<String, Hugetlb>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cpu {
    usage: CpuUsage,
    throttling: Throttling,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CpuUsage {
    total: u64,
    percpu: Vec<u64>,
    kernel: u64,
    user: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Throttling {
    periods: u64,
    throttled_periods: u64,
    throttled_time: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Memory {
    cache: u64,
    usage: Option<MemoryEntry>,
    swap: Option<MemoryEntry>,
    kernel: Option<MemoryEntry>,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: Option<MemoryEntry>,
    raw: HashMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MemoryEntry {
    limit: u64,
    usage: u64,
    max: u64,
    failcnt: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pids {
    current: u64,
    limit: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Hugetlb {
    usage: u64,
    max: u64,
    failcnt: u64,
}

fn entry(e: &Option<MemoryEntry>) -> Option<cg::MemoryEntry> {
    e.as_ref().map(|e| cg::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
    })
}

/// Converts runc's statistics.
pub fn metrics(data: &Stats) -> cg::Metrics {
    let cpu = data.cpu.as_ref().map(|c| cg::CpuStat {
        usage: Some(cg::CpuUsage {
            total: c.usage.total,
            kernel: c.usage.kernel,
            user: c.usage.user,
            per_cpu: c.usage.percpu.clone(),
        }),
        throttling: Some(cg::Throttle {
            periods: c.throttling.periods,
            throttled_periods: c.throttling.throttled_periods,
            throttled_time: c.throttling.throttled_time,
        }),
    });
    let memory = data.memory.as_ref().map(|m| {
        let r = |k: &str| m.raw.get(k).copied().unwrap_or(0);
        cg::MemoryStat {
            cache: m.cache,
            rss: r("rss"),
            rss_huge: r("rss_huge"),
            mapped_file: r("mapped_file"),
            dirty: r("dirty"),
            writeback: r("writeback"),
            pg_pg_in: r("pgpgin"),
            pg_pg_out: r("pgpgout"),
            pg_fault: r("pgfault"),
            pg_maj_fault: r("pgmajfault"),
            inactive_anon: r("inactive_anon"),
            active_anon: r("active_anon"),
            inactive_file: r("inactive_file"),
            active_file: r("active_file"),
            unevictable: r("unevictable"),
            hierarchical_memory_limit: r("hierarchical_memory_limit"),
            hierarchical_swap_limit: r("hierarchical_memsw_limit"),
            total_cache: r("total_cache"),
            total_rss: r("total_rss"),
            total_rss_huge: r("total_rss_huge"),
            total_mapped_file: r("total_mapped_file"),
            total_dirty: r("total_dirty"),
            total_writeback: r("total_writeback"),
            total_pg_pg_in: r("total_pgpgin"),
            total_pg_pg_out: r("total_pgpgout"),
            total_pg_fault: r("total_pgfault"),
            total_pg_maj_fault: r("total_pgmajfault"),
            total_inactive_anon: r("total_inactive_anon"),
            total_active_anon: r("total_active_anon"),
            total_inactive_file: r("total_inactive_file"),
            total_active_file: r("total_active_file"),
            total_unevictable: r("total_unevictable"),
            usage: entry(&m.usage),
            swap: entry(&m.swap),
            kernel: entry(&m.kernel),
            kernel_tcp: entry(&m.kernel_tcp),
        }
    });
    let pids = data.pids.as_ref().map(|p| cg::PidsStat {
        current: p.current,
        limit: p.limit,
    });
    let hugetlb = data
        .hugetlb
        .iter()
        .flatten()
        .map(|(size, v)| cg::HugetlbStat {
            usage: v.usage,
            max: v.max,
            failcnt: v.failcnt,
            pagesize: size.clone(),
        })
        .collect();
    cg::Metrics {
        hugetlb,
        pids,
        cpu,
        memory,
        memory_oom_control: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_runc_stats() {
        let event: Event = serde_json::from_str(
            r#"{"type":"stats","id":"c","data":{"cpu":{"usage":{"total":10,"percpu":[4,6],"kernel":3,"user":7},"throttling":{"periods":2}},
                "memory":{"cache":5,"usage":{"usage":4096,"limit":8192,"max":5000,"failcnt":1},"raw":{"rss":77}},
                "pids":{"current":3,"limit":100},"hugetlb":{"2MB":{"usage":1}},"somethingNew":{"x":1}}}"#,
        )
        .unwrap();
        let m = metrics(&event.data);
        let cpu = m.cpu.unwrap().usage.unwrap();
        assert_eq!(
            (cpu.total, cpu.per_cpu, cpu.kernel, cpu.user),
            (10, vec![4, 6], 3, 7)
        );
        let mem = m.memory.unwrap();
        assert_eq!(
            (mem.cache, mem.rss, mem.usage.unwrap().usage),
            (5, 77, 4096)
        );
        assert_eq!(m.pids.unwrap().current, 3);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
    }
}
