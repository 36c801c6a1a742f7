//! Reading a log back: every kept file oldest first, then following the
//! current one across rotations.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{io_err, rotated, Entry, LogError, Stream};

#[derive(Deserialize)]
struct JsonLine {
    log: String,
    stream: String,
    time: String,
}

/// A CRI line: `TIME STREAM P|F CONTENT`; a full line's entry ends with
/// its newline again.
fn decode_cri(line: &[u8]) -> Option<Entry> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.splitn(4, ' ');
    let time = humantime::parse_rfc3339_weak(parts.next()?).ok()?;
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let mut log = parts.next().unwrap_or("").to_owned();
    if tag == "F" {
        log.push('\n');
    }
    Some(Entry { stream, time, log })
}

fn decode(line: &[u8]) -> Option<Entry> {
    if line.first() != Some(&b'{') {
        return decode_cri(line);
    }
    let rec: JsonLine = serde_json::from_slice(line).ok()?;
    let stream = match rec.stream.as_str() {
        "stderr" => Stream::Stderr,
        _ => Stream::Stdout,
    };
    let time = humantime::parse_rfc3339_weak(&rec.time).ok()?;
    Some(Entry {
        stream,
        time,
        log: rec.log,
    })
}

/// Reads every line of the log at `path` (its rotated files first, oldest
/// first: at least `max_file - 1` of them are looked for, and any further
/// ones that exist, since the writer may keep more than the reader was
/// told), and returns them with a [`Follower`] that goes on from the end of
/// the current file. A log that does not exist yet reads as empty.
///
/// # Errors
/// When a file exists but cannot be read.
pub fn read(path: &Path, max_file: u32) -> Result<(Vec<Entry>, Follower), LogError> {
    // Open the current file first, so that a rotation while the older
    // files are read cannot drop lines between them and it.
    let mut follower = Follower::open(path)?;
    let mut out = Vec::new();
    let mut last = max_file.max(1).saturating_sub(1);
    while rotated(path, last + 1).exists() {
        last += 1;
    }
    for n in (1..=last).rev() {
        let p = rotated(path, n);
        match std::fs::read(&p) {
            Ok(data) => out.extend(data.split(|b| *b == b'\n').filter_map(decode)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &p)(e)),
        }
    }
    out.extend(follower.poll()?);
    Ok((out, follower))
}

/// Reads lines as they are appended to a log, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// The file being read, with its inode; None until it exists.
    file: Option<(File, u64)>,
    /// A line whose newline has not been written yet.
    partial: Vec<u8>,
}

impl Follower {
    /// Follows `path` from its start (or from its creation).
    ///
    /// # Errors
    /// When it exists and cannot be opened.
    pub fn open(path: &Path) -> Result<Follower, LogError> {
        let mut f = Follower {
            path: path.to_owned(),
            file: None,
            partial: Vec::new(),
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> Result<bool, LogError> {
        match File::open(&self.path) {
            Ok(file) => {
                let ino = file.metadata().map_err(io_err("stat", &self.path))?.ino();
                self.file = Some((file, ino));
                self.partial.clear();
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("open", &self.path)(e)),
        }
    }

    fn drain(&mut self, out: &mut Vec<Entry>) -> Result<(), LogError> {
        let Some((file, _)) = &mut self.file else {
            return Ok(());
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(io_err("read", &self.path))?;
        if buf.is_empty() {
            return Ok(());
        }
        self.partial.extend_from_slice(&buf);
        let complete = match self.partial.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => return Ok(()),
        };
        let rest = self.partial.split_off(complete);
        out.extend(self.partial.split(|b| *b == b'\n').filter_map(decode));
        self.partial = rest;
        Ok(())
    }

    /// The lines appended since the last call. When the file was rotated
    /// meanwhile, the rest of the old file comes first, then the new one.
    ///
    /// # Errors
    /// When a file cannot be read.
    pub fn poll(&mut self) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        self.drain(&mut out)?;
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.ino(), m.len()));
        match (&mut self.file, current) {
            (None, Some(_)) => {
                self.reopen()?;
                self.drain(&mut out)?;
            }
            (Some((_, ino)), Some((now, _))) if *ino != now => {
                // Rotated: what was left of the old file is read; go on
                // with the new one from its start.
                self.reopen()?;
                self.drain(&mut out)?;
            }
            (Some((file, _)), Some((_, len))) => {
                // Truncated in place (one file kept): start over.
                let pos = file.stream_position().map_err(io_err("seek", &self.path))?;
                if len < pos {
                    file.seek(SeekFrom::Start(0))
                        .map_err(io_err("seek", &self.path))?;
                    self.partial.clear();
                    self.drain(&mut out)?;
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LineSplitter, LogUri, LogWriter, Rotation, MAX_LINE};
    use std::time::{Duration, SystemTime};

    fn uri(path: &Path, max_size: u64, max_file: u32) -> LogUri {
        LogUri {
            format: crate::Format::JsonFile,
            path: path.to_owned(),
            rotation: Rotation { max_size, max_file },
        }
    }

    #[test]
    fn lines_are_docker_json_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c/c-json.log");
        let mut w = LogWriter::open(&uri(&p, 0, 1)).unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        w.write(Stream::Stdout, b"hello \"x\"\n", t).unwrap();
        w.write(Stream::Stderr, b"bad \xff\n", t).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"log":"hello \"x\"\n","stream":"stdout","time":"2023-11-14T22:13:20.123456789Z"}"#
        );
        let (entries, _) = read(&p, 1).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].log, "hello \"x\"\n");
        assert_eq!(entries[0].time, t);
        assert_eq!(entries[1].stream, Stream::Stderr);
        assert_eq!(entries[1].log, "bad \u{fffd}\n");
    }

    #[test]
    fn rotation_keeps_max_file_files_and_the_tail_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut w = LogWriter::open(&uri(&p, 1000, 3)).unwrap();
        for i in 0..500 {
            w.write(
                Stream::Stdout,
                format!("line {i}\n").as_bytes(),
                SystemTime::now(),
            )
            .unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["x.log", "x.log.1", "x.log.2"]);
        for n in &names {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 1000);
        }
        let (entries, _) = read(&p, 3).unwrap();
        assert_eq!(entries.last().unwrap().log, "line 499\n");
        let nums: Vec<u32> = entries
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(nums.len() > 20 && nums.len() < 500);
    }

    #[test]
    fn the_follower_sees_new_lines_across_rotation_and_waits_for_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.log");
        let mut f = Follower::open(&p).unwrap();
        assert!(f.poll().unwrap().is_empty());
        let mut w = LogWriter::open(&uri(&p, 300, 2)).unwrap();
        let mut seen = Vec::new();
        for i in 0..40 {
            w.write(
                Stream::Stdout,
                format!("n{i}\n").as_bytes(),
                SystemTime::now(),
            )
            .unwrap();
            if i % 3 == 0 {
                seen.extend(f.poll().unwrap());
            }
        }
        seen.extend(f.poll().unwrap());
        let got: Vec<String> = seen.iter().map(|e| e.log.trim().to_owned()).collect();
        let want: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        assert_eq!(got, want);
        // Half a JSON line is held until the rest arrives.
        use std::io::Write;
        let mut raw = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        raw.write_all(br#"{"log":"late\n","stream":"stdout","#)
            .unwrap();
        assert!(f.poll().unwrap().is_empty());
        raw.write_all(b"\"time\":\"2024-01-01T00:00:00Z\"}\n")
            .unwrap();
        assert_eq!(f.poll().unwrap()[0].log, "late\n");
    }

    #[test]
    fn a_cri_log_moved_away_is_reopened_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let u = LogUri::parse(&format!("cri-log://{}", p.display()))
            .unwrap()
            .unwrap();
        let mut w = LogWriter::open(&u).unwrap();
        let t = SystemTime::now();
        w.write(Stream::Stdout, b"before\n", t).unwrap();
        // The kubelet rotates: renames, then asks for a reopen.
        std::fs::rename(&p, dir.path().join("0.log.1")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"after\n", t).unwrap();
        let old = std::fs::read_to_string(dir.path().join("0.log.1")).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert!(old.ends_with(" stdout F before\n"), "{old}");
        assert!(
            new.ends_with(" stdout F after\n") && !new.contains("before"),
            "{new}"
        );
        // Without a reopen, a moved file is noticed at a later write.
        std::fs::rename(&p, dir.path().join("0.log.2")).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        w.write(Stream::Stdout, b"later\n", t).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("later"));
    }

    #[test]
    fn cri_lines_tag_pieces_of_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let u = LogUri::parse(&format!("cri-log://{}", p.display()))
            .unwrap()
            .unwrap();
        assert_eq!(u.format, crate::Format::Cri);
        let mut w = LogWriter::open(&u).unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        let mut s = LineSplitter::default();
        let mut long = vec![b'a'; MAX_LINE + 3];
        long.extend_from_slice(b"\nshort\n");
        s.feed_pieces(&long, |l, partial| {
            w.write_piece(Stream::Stderr, l, partial, t).unwrap()
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("2016-10-06T00:17:09.669794202Z stderr P aaa"));
        assert_eq!(lines[1], "2016-10-06T00:17:09.669794202Z stderr F aaa");
        assert_eq!(lines[2], "2016-10-06T00:17:09.669794202Z stderr F short");
        let (entries, _) = read(&p, 1).unwrap();
        assert_eq!(entries[2].log, "short\n");
        assert_eq!(entries[2].stream, Stream::Stderr);
        assert_eq!(entries[0].log.len(), MAX_LINE, "a piece has no newline");
    }

    #[test]
    fn the_splitter_cuts_lines_and_long_runs() {
        let mut s = LineSplitter::default();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        s.feed(b"ab", |l| lines.push(l.to_vec()));
        s.feed(b"c\nd\ne", |l| lines.push(l.to_vec()));
        assert_eq!(lines, [b"abc\n".to_vec(), b"d\n".to_vec()]);
        s.feed(&vec![b'z'; MAX_LINE + 5], |l| lines.push(l.to_vec()));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].len(), MAX_LINE);
        s.finish(|l| lines.push(l.to_vec()));
        assert_eq!(lines[3].len(), 6);
    }
}
