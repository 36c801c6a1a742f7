//! hull's wire contract with containerd 1.6 clients and shims.
//!
//! - Generated code for every containerd v1 API package, `containerd.types`,
//!   `containerd.events`, the shim's `containerd.task.v2` and
//!   `grpc.health.v1`, and containerd 2.x's transfer and streaming services
//!   with `containerd.types.transfer`, in a module tree that mirrors the proto packages
//!   (`containerd::services::content::v1`, ...), and Kubernetes CRI
//!   `runtime.v1` (`runtime::v1`).
//! - [`errdefs`]: error kinds and their one mapping to gRPC and ttrpc codes.
//! - [`identifiers`], [`labels`], [`digest`]: the validation rules containerd
//!   applies to names, labels and digests.
//! - [`headers`]: request metadata keys (namespace, lease).
//! - [`runtime_options`]: the runc shims' options, old and new forms.
//!
//! This crate does no I/O and depends on no other hull crate.

#![allow(missing_docs)]

pub mod digest;
pub mod errdefs;
pub mod headers;
pub mod identifiers;
pub mod labels;
pub mod runtime_options;
pub mod typeurl;
pub mod wire;

/// The containerd API packages.
#[allow(clippy::all, clippy::unwrap_used)]
pub mod containerd {
    /// `containerd.types`: descriptors, mounts, platforms, metrics.
    pub mod types {
        tonic::include_proto!("containerd.types");
        /// `containerd.types.transfer`: what a transfer moves from and to.
        pub mod transfer {
            tonic::include_proto!("containerd.types.transfer");
        }
    }
    /// `containerd.v1.types`: process state for tasks and shims.
    pub mod v1 {
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    /// `containerd.events`: event payloads (image events live with the images service).
    pub mod events {
        tonic::include_proto!("containerd.events");
    }
    /// The daemon's gRPC services.
    pub mod services {
        pub mod version {
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
        pub mod namespaces {
            pub mod v1 {
                tonic::include_proto!("containerd.services.namespaces.v1");
            }
        }
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        pub mod containers {
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
        pub mod tasks {
            pub mod v1 {
                tonic::include_proto!("containerd.services.tasks.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        pub mod events {
            pub mod v1 {
                tonic::include_proto!("containerd.services.events.v1");
            }
        }
        pub mod introspection {
            pub mod v1 {
                tonic::include_proto!("containerd.services.introspection.v1");
            }
        }
        /// containerd 2.x's image transfer service.
        pub mod transfer {
            pub mod v1 {
                tonic::include_proto!("containerd.services.transfer.v1");
            }
        }
        /// Client-opened streams that transfers refer to.
        pub mod streaming {
            pub mod v1 {
                tonic::include_proto!("containerd.services.streaming.v1");
            }
        }
        /// Services the daemon serves over ttrpc for shims.
        pub mod ttrpc {
            pub mod events {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.events.ttrpc.v1");
                }
            }
        }
    }
    /// `containerd.runc.v1`: runtime options of the runc shims.
    pub mod runc {
        pub mod v1 {
            tonic::include_proto!("containerd.runc.v1");
        }
    }
    /// `containerd.linux.runc`: options of the v1 Linux runtime.
    pub mod linux {
        pub mod runc {
            tonic::include_proto!("containerd.linux.runc");
        }
    }
    /// The shim v2 API.
    pub mod task {
        pub mod v2 {
            tonic::include_proto!("containerd.task.v2");
        }
    }
}

/// Kubernetes CRI (`runtime.v1`): RuntimeService and ImageService.
#[allow(clippy::all, clippy::unwrap_used)]
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// `io.containerd.cgroups.v1`: cgroup statistics in task metrics.
#[allow(clippy::all)]
pub mod io {
    pub mod containerd {
        pub mod cgroups {
            pub mod v1 {
                tonic::include_proto!("io.containerd.cgroups.v1");
            }
        }
    }
}

/// `google.rpc`: the status carried in ttrpc responses and plugin init errors.
#[allow(clippy::all)]
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// `grpc.health.v1`.
#[allow(clippy::all)]
pub mod grpc {
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

/// Serialized `FileDescriptorSet` of every proto compiled here; [`wire`]
/// renders it for the checked-in `proto/wire.txt`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
