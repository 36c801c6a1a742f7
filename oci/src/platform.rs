//! Platforms: the host's, `os/arch[/variant]` text, and which manifests of
//! an index suit a platform, as containerd's `platforms` package decides.

use oci_spec::image::{Arch, Os, Platform, PlatformBuilder};

/// A platform text that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("platform {0:?}: expected os[/arch[/variant]], e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformError(pub String);

/// Go's name for a Rust target architecture.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64",
        other => other,
    }
}

/// `(arch, variant)` as containerd normalizes them: common aliases to
/// Go's names, arm64's default variant dropped, arm's defaulted to v7.
fn normalize(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" | "i686" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            // amd64 v1 is every amd64.
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "" => String::new(),
                other => other.to_owned(),
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                other => other.to_owned(),
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

fn build(os: &str, arch: &str, variant: &str) -> Platform {
    let (arch, variant) = normalize(arch, variant);
    let mut b = PlatformBuilder::default()
        .os(Os::from(os))
        .architecture(Arch::from(arch.as_str()));
    if !variant.is_empty() {
        b = b.variant(variant);
    }
    // Both required fields are set above.
    b.build().unwrap_or_else(|_| Platform::default())
}

/// The platform of this machine (Linux, with the architecture this binary
/// was built for).
pub fn host() -> Platform {
    let variant = if std::env::consts::ARCH == "arm" {
        "v7"
    } else {
        ""
    };
    build("linux", go_arch(std::env::consts::ARCH), variant)
}

/// Parses `os`, `os/arch` or `os/arch/variant` (or a bare architecture,
/// meaning Linux), normalized as containerd does.
///
/// # Errors
/// When the text is empty or has more parts.
pub fn parse(text: &str) -> Result<Platform, PlatformError> {
    let parts: Vec<&str> = text.split('/').collect();
    let bad = || PlatformError(text.to_owned());
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let known_os = |s: &str| {
        matches!(
            s,
            "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris"
        )
    };
    match parts[..] {
        [one] if known_os(one) => Ok(build(one, go_arch(std::env::consts::ARCH), "")),
        [one] => Ok(build("linux", one, "")),
        [os, arch] => Ok(build(os, arch, "")),
        [os, arch, variant] => Ok(build(os, arch, variant)),
        _ => Err(bad()),
    }
}

/// `os/arch[/variant]`.
pub fn format(p: &Platform) -> String {
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Which platforms a pull or a run accepts.
#[derive(Debug, Clone)]
pub struct Matcher {
    want: Platform,
}

impl Matcher {
    /// Accepts `want` and what runs on it.
    pub fn new(want: Platform) -> Matcher {
        Matcher { want }
    }

    /// Accepts this machine's platform.
    pub fn host() -> Matcher {
        Matcher::new(host())
    }

    /// Whether a manifest for `have` suits: same OS and architecture, and
    /// a variant that is the one wanted, or no older than an arm one that
    /// runs there (arm v7 runs v6 and v5; arm64 runs arm64 of any variant
    /// when none is wanted).
    pub fn matches(&self, have: &Platform) -> bool {
        self.rank(have).is_some()
    }

    /// How well `have` suits, lower is better; `None` when it does not.
    /// Picks the best manifest of an index.
    pub fn rank(&self, have: &Platform) -> Option<u32> {
        if have.os().to_string() != self.want.os().to_string() {
            return None;
        }
        let (wa, wv) = normalize(
            &self.want.architecture().to_string(),
            self.want.variant().as_deref().unwrap_or(""),
        );
        let (ha, hv) = normalize(
            &have.architecture().to_string(),
            have.variant().as_deref().unwrap_or(""),
        );
        if wa != ha {
            return None;
        }
        if wv == hv {
            return Some(0);
        }
        if wv.is_empty() {
            return Some(1);
        }
        // An older arm variant runs on a newer one.
        let n = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        match (wa.as_str(), n(&wv), n(&hv)) {
            ("arm", Some(w), Some(h)) if h < w => Some(1 + w - h),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(format(&parse("linux/amd64").unwrap()), "linux/amd64");
        assert_eq!(format(&parse("linux/arm64/v8").unwrap()), "linux/arm64");
        assert_eq!(format(&parse("linux/aarch64").unwrap()), "linux/arm64");
        assert_eq!(format(&parse("linux/arm").unwrap()), "linux/arm/v7");
        assert_eq!(format(&parse("linux/armhf").unwrap()), "linux/arm/v7");
        assert_eq!(format(&parse("arm64").unwrap()), "linux/arm64");
        assert!(format(&parse("linux").unwrap()).starts_with("linux/"));
        for bad in ["", "linux/", "a/b/c/d", "//"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(host().os().to_string(), "linux");
    }

    #[test]
    fn matching_follows_containerd() {
        let m = Matcher::new(parse("linux/arm/v7").unwrap());
        assert!(m.matches(&parse("linux/arm/v7").unwrap()));
        assert!(m.matches(&parse("linux/arm/v6").unwrap()));
        assert!(!m.matches(&parse("linux/arm/v8").unwrap()));
        assert!(!m.matches(&parse("linux/arm64").unwrap()));
        assert!(!m.matches(&parse("windows/arm/v7").unwrap()));
        assert!(m.rank(&parse("linux/arm/v7").unwrap()) < m.rank(&parse("linux/arm/v6").unwrap()));
        let amd = Matcher::new(parse("linux/amd64").unwrap());
        assert!(amd.matches(&parse("linux/x86_64").unwrap()));
        assert!(amd.matches(&parse("linux/amd64/v3").unwrap()));
        assert!(!amd.matches(&parse("linux/386").unwrap()));
        assert!(Matcher::host().matches(&host()));
    }
}
