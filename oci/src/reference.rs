//! Image references normalised as Docker does (`busybox` is
//! `docker.io/library/busybox:latest`), without a regular expression.
//!
//! oci-spec's `Reference` parses with a regular expression whose Unicode
//! `\w{0,127}` builds a large automaton: about 55 ms the first time in
//! each process. hulld pays that once; a CLI would pay it on every
//! command, so clients normalise with this instead. It accepts and
//! produces the same as oci-spec's parser for the references Docker
//! accepts (checked against it in the tests).

/// A reference that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format: {0}")]
pub struct ReferenceError(pub String);

fn component_ok(c: &str) -> bool {
    // [a-z0-9]+ joined by separators `.`, `_`, `__` or runs of `-`.
    if c.is_empty() {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn domain_ok(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(x))
}

fn digest_ok(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|p| {
        p.bytes().next().is_some_and(|x| x.is_ascii_alphabetic())
            && p.bytes().all(|x| x.is_ascii_alphanumeric())
    });
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit());
    alg_ok
        && hex_ok
        && match alg {
            "sha256" => hex.len() == 64,
            "sha512" => hex.len() == 128,
            _ => true,
        }
}

/// The parts of a normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// Registry host (with port).
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest, if any.
    pub digest: Option<String>,
}

impl Parts {
    /// The whole normalised name.
    pub fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// Parses and normalises `text` as Docker does.
///
/// # Errors
/// When it is not a reference.
pub fn parse(text: &str) -> Result<Parts, ReferenceError> {
    let bad = || ReferenceError(text.to_owned());
    if text.is_empty() || text.len() > 255 + 128 + 140 {
        return Err(bad());
    }
    let (name_tag, digest) = match text.split_once('@') {
        Some((n, d)) => {
            if !digest_ok(d) {
                return Err(bad());
            }
            (n, Some(d.to_owned()))
        }
        None => (text, None),
    };
    // A tag follows the last ':' after the last '/'.
    let slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[slash..].rfind(':') {
        Some(i) => {
            let t = &name_tag[slash + i + 1..];
            if !tag_ok(t) {
                return Err(bad());
            }
            (&name_tag[..slash + i], Some(t.to_owned()))
        }
        None => (name_tag, None),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !domain_ok(first) {
                return Err(bad());
            }
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if path.is_empty() || !path.split('/').all(component_ok) {
        return Err(bad());
    }
    if registry.len() + 1 + path.len() > 255 {
        return Err(bad());
    }
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_owned()),
        _ => tag,
    };
    Ok(Parts {
        registry,
        repository,
        tag,
        digest,
    })
}

/// `text` normalised (`busybox` → `docker.io/library/busybox:latest`).
///
/// # Errors
/// When it is not a reference.
pub fn normalize(text: &str) -> Result<String, ReferenceError> {
    parse(text).map(|p| p.whole())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::distribution::Reference;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn agrees_with_oci_spec() {
        let with_digest = format!("busybox@{D}");
        let tag_and_digest = format!("127.0.0.1:5000/a/b:v1@{D}");
        let cases = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "user/app:1.2",
            "docker.io/user/app",
            "localhost/app",
            "localhost:5000/app:x",
            "127.0.0.1:5000/hull/busybox:1",
            "ghcr.io/org/sub/path/img:2024.01_rc-1",
            "my-registry.example.com:443/a__b/c.d/e--f:latest",
            with_digest.as_str(),
            tag_and_digest.as_str(),
            // Refused by both.
            "",
            "a:b:c",
            "app:",
            ":tag",
            "a//b",
            "-app",
            "app-",
            "busybox@sha256:short",
            "host:port/app",
            "a/b:tag with space",
        ];
        for c in cases {
            let ours = normalize(c).ok();
            let theirs = Reference::try_from(c).ok().map(|r| r.whole());
            assert_eq!(ours, theirs, "{c:?}");
        }
    }
}
