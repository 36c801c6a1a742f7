//! Media types: OCI's (from oci-spec's [`MediaType`]) and Docker's, and
//! what kind of document or layer each one names.

pub use oci_spec::image::MediaType;

/// Docker's schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's uncompressed layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker's foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker's foreign uncompressed layer.
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// What a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An index or manifest list: manifests by platform.
    Index,
    /// A manifest: a config and layers.
    Manifest,
    /// An image config.
    Config,
    /// A filesystem layer.
    Layer {
        /// Its compression.
        compression: Compression,
        /// Whether registries may refuse to distribute it.
        foreign: bool,
    },
    /// Anything else (attestations, signatures, artifacts).
    Other,
}

impl Kind {
    /// Whether this is a layer.
    pub fn is_layer(self) -> bool {
        matches!(self, Kind::Layer { .. })
    }
}

/// What `media_type` names. Parameters after `;` are ignored.
pub fn classify(media_type: &str) -> Kind {
    let mt = media_type.split(';').next().unwrap_or("").trim();
    let layer = |compression, foreign| Kind::Layer {
        compression,
        foreign,
    };
    match mt {
        DOCKER_MANIFEST_LIST => return Kind::Index,
        DOCKER_MANIFEST => return Kind::Manifest,
        DOCKER_CONFIG => return Kind::Config,
        DOCKER_LAYER => return layer(Compression::None, false),
        DOCKER_LAYER_GZIP => return layer(Compression::Gzip, false),
        DOCKER_FOREIGN_LAYER => return layer(Compression::None, true),
        DOCKER_FOREIGN_LAYER_GZIP => return layer(Compression::Gzip, true),
        _ => {}
    }
    // An OCI layer type may carry suffixes ("+gzip", "+zstd", wrappers):
    // the last one names the compression, as containerd reads them.
    let (base, ext) = match mt.split_once('+') {
        Some((b, e)) => (b, Some(e)),
        None => (mt, None),
    };
    let compression = match ext.and_then(|e| e.rsplit('+').next()) {
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        _ => Compression::None,
    };
    if base == MediaType::ImageLayer.to_string() {
        return layer(compression, false);
    }
    #[allow(deprecated)]
    if base == MediaType::ImageLayerNonDistributable.to_string() {
        return layer(compression, true);
    }
    match MediaType::from(mt) {
        MediaType::ImageIndex => Kind::Index,
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageConfig => Kind::Config,
        _ => Kind::Other,
    }
}

/// The media type of an uncompressed layer, as an applied layer reports.
pub fn layer_uncompressed() -> String {
    MediaType::ImageLayer.to_string()
}

/// The media type of a gzip layer, as a new diff is written by default.
pub fn layer_gzip() -> String {
    MediaType::ImageLayerGzip.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_both_families() {
        assert_eq!(
            classify("application/vnd.oci.image.index.v1+json"),
            Kind::Index
        );
        assert_eq!(classify(DOCKER_MANIFEST_LIST), Kind::Index);
        assert_eq!(classify(DOCKER_MANIFEST), Kind::Manifest);
        assert_eq!(
            classify("application/vnd.oci.image.config.v1+json"),
            Kind::Config
        );
        assert_eq!(
            classify("application/vnd.oci.image.layer.v1.tar+zstd"),
            Kind::Layer {
                compression: Compression::Zstd,
                foreign: false
            }
        );
        assert_eq!(
            classify(DOCKER_FOREIGN_LAYER_GZIP),
            Kind::Layer {
                compression: Compression::Gzip,
                foreign: true
            }
        );
        assert!(classify("application/vnd.oci.image.layer.v1.tar; foo=bar").is_layer());
        assert_eq!(classify("application/vnd.in-toto+json"), Kind::Other);
        assert_eq!(classify(""), Kind::Other);
        assert_eq!(layer_gzip(), "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(
            layer_uncompressed(),
            "application/vnd.oci.image.layer.v1.tar"
        );
    }
}
