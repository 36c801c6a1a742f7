//! Type URLs of `Any` payloads, as containerd's typeurl package writes them.

use prost::Name;

/// OCI runtime spec (JSON value).
pub const RUNTIME_SPEC: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// OCI process spec for exec (JSON value).
pub const PROCESS_SPEC: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// OCI Linux resources for task updates (JSON value).
pub const LINUX_RESOURCES: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// containerd names protobuf messages by their full name, without the
/// `type.googleapis.com/` prefix that prost adds.
pub fn of<M: Name>() -> String {
    M::full_name()
}

/// Packs a protobuf message the way containerd's typeurl does.
pub fn pack<M: Name>(msg: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: of::<M>(),
        value: msg.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::events::TaskExit;
    use crate::containerd::services::images::v1::ImageCreate;

    #[test]
    fn event_type_urls_match_containerd() {
        assert_eq!(of::<TaskExit>(), "containerd.events.TaskExit");
        assert_eq!(
            of::<ImageCreate>(),
            "containerd.services.images.v1.ImageCreate"
        );
    }
}
