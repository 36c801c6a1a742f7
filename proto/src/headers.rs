//! Request metadata keys that carry context across the wire.

/// gRPC metadata key naming the namespace of a request.
pub const NAMESPACE: &str = "containerd-namespace";
/// ttrpc metadata key naming the namespace of a request.
pub const NAMESPACE_TTRPC: &str = "containerd-namespace-ttrpc";
/// gRPC metadata key naming the lease that new objects are added to.
pub const LEASE: &str = "containerd-lease";
