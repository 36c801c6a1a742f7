//! `top`: the container's processes, as `ps -ef` prints them.

use std::time::SystemTime;

use hull_proto::containerd::services::tasks::v1::ListPidsRequest;
use tonic::Status;

use super::list::process_start;
use super::Docker;
use crate::Error;

/// The columns `top` prints.
pub const TOP_TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| uid.to_string())
}

fn row(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = rest.get(1)?.to_string();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()??
        .max(1) as u64;
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    let cpu = ticks / hz;
    let time = format!("{:02}:{:02}:{:02}", cpu / 3600, cpu / 60 % 60, cpu % 60);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stime = process_start(pid)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| {
            let s = d.as_secs() % 86_400;
            format!("{:02}:{:02}", s / 3600, s / 60 % 60)
        })
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cmd = if cmd.is_empty() {
        format!("[{}]", stat.split_once('(')?.1.rsplit_once(')')?.0)
    } else {
        cmd.join(" ")
    };
    Some(vec![
        user_name(uid),
        pid.to_string(),
        ppid,
        "0".into(),
        stime,
        "?".into(),
        time,
        cmd,
    ])
}

impl Docker {
    /// The processes of running container `key`, one row per process
    /// under [`TOP_TITLES`].
    ///
    /// # Errors
    /// NotFound; FailedPrecondition when it is not running.
    pub async fn top(&self, key: &str) -> Result<Vec<Vec<String>>, Error> {
        let c = self.find(key).await?;
        let pids = match self
            .client
            .tasks()
            .list_pids(ListPidsRequest {
                container_id: c.id.clone(),
            })
            .await
        {
            Ok(r) => r.into_inner().processes,
            Err(s) if crate::from_status(&s) == hull_proto::errdefs::Kind::NotFound => {
                return Err(Error::Status(Status::failed_precondition(format!(
                    "Container {} is not running",
                    c.id
                ))))
            }
            Err(s) => return Err(s.into()),
        };
        let mut rows: Vec<Vec<String>> = pids.iter().filter_map(|p| row(p.pid)).collect();
        rows.sort_by_key(|r| r[1].parse::<u32>().unwrap_or(0));
        Ok(rows)
    }
}
