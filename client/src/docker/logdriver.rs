//! Container logs on containerd: its shim cannot write json-file logs
//! itself, but starts a `binary://` logger with the process's stdout on
//! fd 3 and stderr on fd 4 (closing fd 5 once ready). hullctl is that
//! logger, writing the same files hull-shim writes.

use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hull_logs::{LineSplitter, LogUri, LogWriter, Stream};

/// The argument that marks a logger invocation.
pub const MARKER: &str = "hull-log-driver";

/// The logging binary: this program if it is hullctl, else hullctl on
/// PATH.
pub fn default_logger() -> PathBuf {
    if let Some(me) = std::env::current_exe()
        .ok()
        .filter(|p| p.file_name().is_some_and(|n| n == "hullctl"))
    {
        return me;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("hullctl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/hullctl"))
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `binary://` URI that makes containerd's shim run `logger` (hullctl)
/// as the logger for `log`.
pub fn binary_uri(logger: &std::path::Path, log: &LogUri) -> String {
    format!(
        "binary://{}?{MARKER}=json-file&path={}&max-size={}&max-file={}",
        logger.display(),
        escape(&log.path.to_string_lossy()),
        log.rotation.max_size,
        log.rotation.max_file
    )
}

/// Whether `args` (without the program name) are a logger invocation.
pub fn is_log_driver(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == MARKER || a.starts_with(&format!("{MARKER}=")))
}

/// Reads the options from `key value` pairs (containerd's shim) or
/// `key=value` words (hull-shim).
fn options(args: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some((k, v)) = a.split_once('=') {
            out.push((k.to_owned(), unescape(v)));
        } else if let Some(v) = it.next() {
            out.push((a.clone(), unescape(v)));
        }
    }
    out
}

/// Runs as a logger: copies fds 3 and 4 into the log the arguments name
/// until both close. Returns the process exit code.
pub fn run_log_driver(args: &[String]) -> i32 {
    let mut path = None;
    let mut rotation = hull_logs::Rotation::default();
    for (k, v) in options(args) {
        match k.as_str() {
            "path" => path = Some(PathBuf::from(v)),
            "max-size" => rotation.max_size = v.parse().unwrap_or(0),
            "max-file" => rotation.max_file = v.parse().unwrap_or(1).max(1),
            _ => {}
        }
    }
    let Some(path) = path else {
        eprintln!("hullctl {MARKER}: no path");
        return 2;
    };
    let uri = LogUri {
        format: hull_logs::Format::JsonFile,
        path,
        rotation,
    };
    let writer = match LogWriter::open(&uri) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            eprintln!("hullctl {MARKER}: {e}");
            return 1;
        }
    };
    // SAFETY: the shim starts the logger with these three fds open and
    // owned by nobody else in this process.
    let (out, err, ready) = unsafe {
        (
            File::from_raw_fd(3),
            File::from_raw_fd(4),
            File::from_raw_fd(5),
        )
    };
    drop(ready);
    let copy = |mut from: File, stream: Stream, w: Arc<Mutex<LogWriter>>| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut lines = LineSplitter::default();
            let mut write = |l: &[u8]| {
                let _ =
                    w.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .write(stream, l, SystemTime::now());
            };
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lines.feed(&buf[..n], &mut write),
                }
            }
            lines.finish(&mut write);
        })
    };
    let a = copy(out, Stream::Stdout, writer.clone());
    let b = copy(err, Stream::Stderr, writer);
    let _ = a.join();
    let _ = b.join();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_options_arrive_either_way() {
        let log = LogUri {
            format: hull_logs::Format::JsonFile,
            path: "/var/lib/x y/c.log".into(),
            rotation: hull_logs::Rotation {
                max_size: 10,
                max_file: 2,
            },
        };
        let uri = binary_uri(std::path::Path::new("/usr/bin/hullctl"), &log);
        assert!(uri.contains("path=/var/lib/x%20y/c.log"), "{uri}");
        let query = uri.split_once('?').unwrap().1;
        let words: Vec<String> = query.split('&').map(str::to_owned).collect();
        assert!(is_log_driver(&words));
        let pairs: Vec<String> = query
            .split('&')
            .flat_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                [k.to_owned(), unescape(v)]
            })
            .collect();
        for args in [words, pairs] {
            let o = options(&args);
            assert!(
                o.contains(&("path".into(), "/var/lib/x y/c.log".into())),
                "{o:?}"
            );
            assert!(o.contains(&("max-file".into(), "2".into())));
        }
    }
}
