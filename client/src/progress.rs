//! Pull progress as people read it: a bar per layer on a terminal, one
//! line per step otherwise (Docker's wording).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use hull_proto::containerd::types::transfer::Progress;

/// What `hullctl pull` shows.
pub struct PullView {
    quiet: bool,
    bars: Option<MultiProgress>,
    layers: BTreeMap<String, ProgressBar>,
    said: BTreeSet<(String, String)>,
    image: Option<(String, String)>,
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

impl PullView {
    /// Bars when stdout is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> PullView {
        let bars = (!quiet && std::io::stdout().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        PullView {
            quiet,
            bars,
            layers: BTreeMap::new(),
            said: BTreeSet::new(),
            image: None,
        }
    }

    /// Shows one event.
    pub fn event(&mut self, p: &Progress) {
        let media_type = p.desc.as_ref().map_or("", |d| d.media_type.as_str());
        match p.event.as_str() {
            "resolved" => {
                if let Some(d) = &p.desc {
                    self.image = Some((p.name.clone(), d.digest.clone()));
                }
                self.line(&p.name, "Resolved", &format!("{}: resolved", p.name));
                return;
            }
            "saved" | "resolving" => return,
            _ => {}
        }
        if !media_type.contains("layer") {
            return;
        }
        let id = short(&p.name);
        let word = match p.event.as_str() {
            "waiting" => "Waiting",
            "downloading" => "Downloading",
            "complete" => "Download complete",
            "exists" => "Already exists",
            "unpacking" => "Extracting",
            "unpacked" => "Pull complete",
            other => other,
        };
        if let Some(multi) = &self.bars {
            let bar = self.layers.entry(p.name.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(u64::try_from(p.total).unwrap_or(0)));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {msg:18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(id.clone());
                b
            });
            bar.set_message(word.to_owned());
            bar.set_position(u64::try_from(p.progress).unwrap_or(0));
            if p.event == "unpacked" || p.event == "exists" {
                bar.finish();
            }
        } else {
            self.line(&p.name, word, &format!("{id}: {word}"));
        }
    }

    fn line(&mut self, key: &str, word: &str, text: &str) {
        if self.quiet || self.bars.is_some() && word != "Resolved" {
            return;
        }
        if self.said.insert((key.to_owned(), word.to_owned())) {
            println!("{text}");
        }
    }

    /// The summary Docker prints after a pull.
    pub fn finish(&mut self) {
        if let Some(m) = &self.bars {
            let _ = m.clear();
        }
        if let Some((name, digest)) = &self.image {
            if !self.quiet {
                println!("Digest: {digest}");
                println!("Status: Downloaded image for {name}");
            }
            println!("{name}");
        }
    }
}

/// What `hullctl push` shows: one line per blob step, Docker's words.
pub struct PushView {
    quiet: bool,
}

impl PushView {
    /// Lines unless `quiet`.
    pub fn new(quiet: bool) -> PushView {
        PushView { quiet }
    }

    /// Shows one event.
    pub fn event(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let word = match p.event.as_str() {
            "exists" => "Layer already exists",
            "mounted" => "Mounted from another repository",
            "uploading" => "Pushing",
            "uploaded" => "Pushed",
            "pushed" => {
                let d = p.desc.as_ref().map_or("", |d| d.digest.as_str());
                let size = p.desc.as_ref().map_or(0, |d| d.size);
                println!("{}: digest: {d} size: {size}", p.name);
                return;
            }
            _ => return,
        };
        println!("{}: {word}", short(&p.name));
    }
}
