//! Request metadata keys that carry context across the wire.

/// gRPC metadata key naming the namespace of a request.
pub const NAMESPACE: &str = "containerd-namespace";
/// ttrpc metadata key naming the namespace of a request.
pub const NAMESPACE_TTRPC: &str = "containerd-namespace-ttrpc";
/// gRPC metadata key naming the lease that new objects are added to.
pub const LEASE: &str = "containerd-lease";
/// ttrpc metadata key of hull's own on a shim's `Create`: "true" asks the
/// shim to start the init process in the same runtime call (`runc run
/// --detach`), for a caller that calls `Start` right after; that `Start`
/// then only reports the pid. A shim that does not know the key creates
/// as usual and the `Start` starts, so the hint is safe to send to any.
pub const START_AT_CREATE: &str = "hull-start-at-create";
/// OCI spec annotation of hull's own, set to "true" by hulld on the spec of
/// its built-in pause. A hull-shim asked to create and start such a task at
/// once starts the pause itself (the spec's namespaces, cgroup, hostname,
/// sysctls, user and root) instead of through the OCI runtime; any other
/// shim, or any other request, runs the spec with the runtime as usual.
pub const BUILTIN_PAUSE: &str = "io.hull.builtin-pause";
