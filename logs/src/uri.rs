//! The stdout/stderr URI that asks the shim to write a log file:
//! `json-file:///var/lib/hull/containers/ID/ID-json.log?max-size=10m&max-file=3`,
//! or `cri-log:///var/log/pods/…/0.log` for the kubelet's format.

use std::fmt;
use std::path::PathBuf;

use crate::{Format, LogError, Rotation};

/// A log file and how it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogUri {
    /// Line format.
    pub format: Format,
    /// The current file (absolute).
    pub path: PathBuf,
    /// Rotation limits.
    pub rotation: Rotation,
}

impl LogUri {
    /// Parses a log URI; `Ok(None)` when `s` is some other kind of stdio
    /// (a FIFO, `file://`, `binary://`).
    ///
    /// # Errors
    /// Invalid for a log URI with a relative path or a bad option.
    pub fn parse(s: &str) -> Result<Option<LogUri>, LogError> {
        let (format, rest) = if let Some(rest) = s.strip_prefix("json-file://") {
            (Format::JsonFile, rest)
        } else if let Some(rest) = s.strip_prefix("cri-log://") {
            (Format::Cri, rest)
        } else {
            return Ok(None);
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err(LogError::Invalid(format!(
                "log path {path:?} is not absolute"
            )));
        }
        let mut rotation = Rotation::default();
        for opt in query.split('&').filter(|o| !o.is_empty()) {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k {
                "max-size" => rotation.max_size = parse_size(v)?,
                "max-file" => {
                    rotation.max_file = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        LogError::Invalid(format!("max-file {v:?} is not a positive number"))
                    })?
                }
                _ => return Err(LogError::Invalid(format!("unknown log option {k:?}"))),
            }
        }
        Ok(Some(LogUri {
            format,
            path: PathBuf::from(path),
            rotation,
        }))
    }
}

impl fmt::Display for LogUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.format.scheme(), self.path.display())?;
        let mut sep = '?';
        if self.rotation.max_size > 0 {
            write!(f, "{sep}max-size={}", self.rotation.max_size)?;
            sep = '&';
        }
        if self.rotation.max_file > 1 {
            write!(f, "{sep}max-file={}", self.rotation.max_file)?;
        }
        Ok(())
    }
}

/// A size as Docker's `--log-opt max-size` takes it: bytes, or a number
/// with `k`, `m`, `g` or `t` (powers of 1024), optionally followed by `b`
/// or `ib`, in any case.
///
/// # Errors
/// Invalid for anything else.
pub fn parse_size(s: &str) -> Result<u64, LogError> {
    let bad = || LogError::Invalid(format!("invalid size {s:?} (e.g. 100k, 10m, 1g)"));
    let lower = s.trim().to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(unit_start);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = num * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_reads_them() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1.5KB").unwrap(), 1536);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn uris_round_trip_and_other_stdio_is_not_a_log() {
        let u = LogUri::parse("json-file:///a/b.log?max-size=1k&max-file=3")
            .unwrap()
            .unwrap();
        assert_eq!(u.path, PathBuf::from("/a/b.log"));
        assert_eq!(
            u.rotation,
            Rotation {
                max_size: 1024,
                max_file: 3
            }
        );
        assert_eq!(
            u.to_string(),
            "json-file:///a/b.log?max-size=1024&max-file=3"
        );
        assert_eq!(LogUri::parse(&u.to_string()).unwrap().unwrap(), u);
        assert!(LogUri::parse("/run/fifo").unwrap().is_none());
        assert!(LogUri::parse("file:///x").unwrap().is_none());
        assert!(LogUri::parse("json-file://rel/x").is_err());
        assert!(LogUri::parse("json-file:///x?max-file=0").is_err());
        assert!(LogUri::parse("json-file:///x?colour=red").is_err());
    }
}
