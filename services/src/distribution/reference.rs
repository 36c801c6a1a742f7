//! Image references as docker and containerd read them.

use hull_oci::oci_spec::distribution::Reference;

use super::{DistributionError, Result};

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses `text`: a missing registry is docker.io, a one-part docker.io
    /// name is under `library/`, and no tag or digest means `latest`.
    ///
    /// # Errors
    /// InvalidArgument naming the text when it is not a reference.
    pub fn parse(text: &str) -> Result<ImageRef> {
        let inner = Reference::try_from(text).map_err(|source| DistributionError::Reference {
            text: text.to_owned(),
            source,
        })?;
        Ok(ImageRef { inner })
    }

    /// The registry host (with its port), e.g. `docker.io`, `localhost:5000`.
    pub fn host(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path within the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// there is one (it is what the reference pins), else the tag.
    pub fn object(&self) -> &str {
        self.digest().or(self.tag()).unwrap_or("latest")
    }

    /// The full normalised name, as image records are named.
    pub fn name(&self) -> String {
        self.inner.whole()
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalised_as_docker_does() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox:latest");
        assert_eq!(
            (r.host(), r.repository(), r.object()),
            ("docker.io", "library/busybox", "latest")
        );
        assert_eq!(
            ImageRef::parse("user/app:1.2").unwrap().name(),
            "docker.io/user/app:1.2"
        );
        let r = ImageRef::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(
            (r.host(), r.repository(), r.tag()),
            ("localhost:5000", "team/app", Some("v1"))
        );
        let r = ImageRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!((r.host(), r.object()), ("127.0.0.1:5000", "latest"));
    }

    #[test]
    fn digests_pin_what_is_fetched() {
        let r = ImageRef::parse(&format!("registry.example/app@{D}")).unwrap();
        assert_eq!((r.tag(), r.object()), (None, D));
        assert_eq!(r.name(), format!("registry.example/app@{D}"));
        let r = ImageRef::parse(&format!("app:1@{D}")).unwrap();
        assert_eq!((r.tag(), r.digest(), r.object()), (Some("1"), Some(D), D));
    }

    #[test]
    fn malformed_ones_say_so() {
        for bad in [
            "",
            "library/Upper",
            "app@sha256:abc",
            "app:",
            "a b",
            "app@md5:0123456789abcdef0123456789abcdef",
        ] {
            let e = ImageRef::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(e.to_string().contains("invalid reference"), "{bad}: {e}");
            assert_eq!(
                hull_proto::errdefs::Classify::kind(&e),
                hull_proto::errdefs::Kind::InvalidArgument
            );
        }
    }
}
