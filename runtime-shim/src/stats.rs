//! Cgroup statistics from `runc events --stats`, in containerd's cgroup v1
//! metrics message.

use hull_proto::io::containerd::cgroups::v1 as cg;
use serde_json::Value;

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

fn entry(v: &Value, key: &str) -> Option<cg::MemoryEntry> {
    let e = v.get(key)?;
    Some(cg::MemoryEntry {
        limit: u(e, &["limit"]),
        usage: u(e, &["usage"]),
        max: u(e, &["max"]),
        failcnt: u(e, &["failcnt"]),
    })
}

/// Converts the `data` object of a runc stats event.
pub fn metrics(data: &Value) -> cg::Metrics {
    let cpu = data.get("cpu").map(|c| cg::CpuStat {
        usage: Some(cg::CpuUsage {
            total: u(c, &["usage", "total"]),
            kernel: u(c, &["usage", "kernel"]),
            user: u(c, &["usage", "user"]),
            per_cpu: c
                .pointer("/usage/percpu")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
        }),
        throttling: Some(cg::Throttle {
            periods: u(c, &["throttling", "periods"]),
            throttled_periods: u(c, &["throttling", "throttledPeriods"]),
            throttled_time: u(c, &["throttling", "throttledTime"]),
        }),
    });
    let memory = data.get("memory").map(|m| {
        let raw = m.get("raw").cloned().unwrap_or_default();
        let r = |k: &str| u(&raw, &[k]);
        cg::MemoryStat {
            cache: u(m, &["cache"]),
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
            usage: entry(m, "usage"),
            swap: entry(m, "swap"),
            kernel: entry(m, "kernel"),
            kernel_tcp: entry(m, "kernelTCP"),
        }
    });
    let pids = data.get("pids").map(|p| cg::PidsStat {
        current: u(p, &["current"]),
        limit: u(p, &["limit"]),
    });
    let hugetlb = data
        .get("hugetlb")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(size, v)| cg::HugetlbStat {
                    usage: u(v, &["usage"]),
                    max: u(v, &["max"]),
                    failcnt: u(v, &["failcnt"]),
                    pagesize: size.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
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
        let data: Value = serde_json::from_str(
            r#"{"cpu":{"usage":{"total":10,"percpu":[4,6],"kernel":3,"user":7},"throttling":{"periods":2}},
                "memory":{"cache":5,"usage":{"usage":4096,"limit":8192,"max":5000,"failcnt":1},"raw":{"rss":77}},
                "pids":{"current":3,"limit":100}}"#,
        )
        .unwrap();
        let m = metrics(&data);
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
    }
}
