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

/// A cgroup file's number ("max" reads as `max`).
fn number(text: &str, max: u64) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        Some(max)
    } else {
        t.parse().ok()
    }
}

/// A flat keyed file (`key value` per line).
fn keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Statistics read from the files of a cgroup (`dirs`: its directory in
/// each hierarchy), for a process no runtime keeps: the figures runc's
/// `events --stats` reads from the same files, on cgroup v1 and v2.
pub fn from_cgroup(dirs: &[std::path::PathBuf]) -> Stats {
    let read = |name: &str| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
    };
    let num = |name: &str, max: u64| read(name).and_then(|t| number(&t, max));
    let cpu_stat = read("cpu.stat").map(|t| keyed(&t)).unwrap_or_default();
    let c = |k: &str| cpu_stat.get(k).copied().unwrap_or(0);
    let cpu = if let Some(total) = num("cpuacct.usage", 0) {
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks = read("cpuacct.stat").map(|t| keyed(&t)).unwrap_or_default();
        let ns = |k: &str| ticks.get(k).copied().unwrap_or(0) * (1_000_000_000 / hz);
        Some(Cpu {
            usage: CpuUsage {
                total,
                percpu: read("cpuacct.usage_percpu")
                    .map(|t| {
                        t.split_whitespace()
                            .filter_map(|v| v.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default(),
                kernel: ns("system"),
                user: ns("user"),
            },
            throttling: Throttling {
                periods: c("nr_periods"),
                throttled_periods: c("nr_throttled"),
                throttled_time: c("throttled_time"),
            },
        })
    } else if cpu_stat.contains_key("usage_usec") {
        Some(Cpu {
            usage: CpuUsage {
                total: c("usage_usec") * 1000,
                percpu: Vec::new(),
                kernel: c("system_usec") * 1000,
                user: c("user_usec") * 1000,
            },
            throttling: Throttling {
                periods: c("nr_periods"),
                throttled_periods: c("nr_throttled"),
                throttled_time: c("throttled_usec") * 1000,
            },
        })
    } else {
        None
    };
    let raw = read("memory.stat").map(|t| keyed(&t)).unwrap_or_default();
    let memory = if let Some(usage) = num("memory.usage_in_bytes", 0) {
        let entry = |prefix: &str| MemoryEntry {
            limit: num(&format!("{prefix}.limit_in_bytes"), 0).unwrap_or(0),
            usage: num(&format!("{prefix}.usage_in_bytes"), 0).unwrap_or(0),
            max: num(&format!("{prefix}.max_usage_in_bytes"), 0).unwrap_or(0),
            failcnt: num(&format!("{prefix}.failcnt"), 0).unwrap_or(0),
        };
        Some(Memory {
            cache: raw.get("cache").copied().unwrap_or(0),
            usage: Some(MemoryEntry {
                usage,
                ..entry("memory")
            }),
            swap: Some(entry("memory.memsw")),
            kernel: Some(entry("memory.kmem")),
            kernel_tcp: Some(entry("memory.kmem.tcp")),
            raw,
        })
    } else {
        num("memory.current", 0).map(|usage| Memory {
            cache: raw.get("file").copied().unwrap_or(0),
            usage: Some(MemoryEntry {
                usage,
                limit: num("memory.max", u64::MAX).unwrap_or(0),
                max: num("memory.peak", 0).unwrap_or(0),
                failcnt: 0,
            }),
            swap: num("memory.swap.current", 0).map(|usage| MemoryEntry {
                usage,
                limit: num("memory.swap.max", u64::MAX).unwrap_or(0),
                ..MemoryEntry::default()
            }),
            kernel: None,
            kernel_tcp: None,
            raw,
        })
    };
    let pids = num("pids.current", 0).map(|current| Pids {
        current,
        limit: num("pids.max", 0).unwrap_or(0),
    });
    Stats {
        cpu,
        memory,
        pids,
        hugetlb: None,
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

    #[test]
    fn reads_cgroup_files_of_both_versions() {
        let v1 = tempfile::tempdir().unwrap();
        let (cpu, mem) = (v1.path().join("cpu"), v1.path().join("memory"));
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "1500\n").unwrap();
        std::fs::write(cpu.join("cpuacct.usage_percpu"), "1000 500 \n").unwrap();
        std::fs::write(
            cpu.join("cpu.stat"),
            "nr_periods 4\nnr_throttled 1\nthrottled_time 9\n",
        )
        .unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "8192\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "cache 12\nrss 34\ntotal_inactive_file 5\n",
        )
        .unwrap();
        let m = metrics(&from_cgroup(&[cpu, mem]));
        let u = m.cpu.as_ref().unwrap().usage.clone().unwrap();
        assert_eq!((u.total, u.per_cpu), (1500, vec![1000, 500]));
        assert_eq!(m.cpu.unwrap().throttling.unwrap().throttled_time, 9);
        let mem = m.memory.unwrap();
        let usage = mem.usage.unwrap();
        assert_eq!((usage.usage, usage.limit), (4096, 8192));
        assert_eq!((mem.cache, mem.rss, mem.total_inactive_file), (12, 34, 5));
        assert!(m.pids.is_none());

        let v2 = tempfile::tempdir().unwrap();
        let d = v2.path().to_owned();
        std::fs::write(
            d.join("cpu.stat"),
            "usage_usec 3\nuser_usec 2\nsystem_usec 1\n",
        )
        .unwrap();
        std::fs::write(d.join("memory.current"), "700\n").unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        std::fs::write(d.join("memory.stat"), "file 7\ninactive_file 3\n").unwrap();
        std::fs::write(d.join("pids.current"), "2\n").unwrap();
        std::fs::write(d.join("pids.max"), "max\n").unwrap();
        let m = metrics(&from_cgroup(&[d]));
        let u = m.cpu.unwrap().usage.unwrap();
        assert_eq!((u.total, u.user, u.kernel), (3000, 2000, 1000));
        let mem = m.memory.unwrap();
        assert_eq!(
            (mem.usage.unwrap().limit, mem.cache, mem.inactive_file),
            (u64::MAX, 7, 3)
        );
        assert_eq!(m.pids.map(|p| (p.current, p.limit)), Some((2, 0)));
    }
}
