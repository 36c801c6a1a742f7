//! RuntimeService: Version, Status (RuntimeReady, and NetworkReady from
//! whether a CNI network config exists), UpdateRuntimeConfig and
//! RuntimeConfig. Pods and containers are not served yet: those calls
//! answer Unimplemented with the call's name, so a kubelet fails clearly
//! instead of running something half-made.

use std::sync::Arc;

use hull_proto::runtime::v1::runtime_service_server::RuntimeService;
use hull_proto::runtime::v1::*;
use tonic::{Request, Response, Status};

use super::Cri;

/// The CRI API version served.
pub const API_VERSION: &str = "v1";

/// RuntimeService over [`Cri`].
#[derive(Debug, Clone)]
pub struct CriRuntime(pub Arc<Cri>);

fn not_yet(call: &str) -> Status {
    Status::unimplemented(format!(
        "{call} is not served by hull's CRI yet (pods and containers are still to come)"
    ))
}

/// An empty stream of `T`, for the stream types of calls not served.
pub type NoStream<T> = tokio_stream::Empty<Result<T, Status>>;

impl CriRuntime {
    /// Whether a CNI network config exists in any of the directories, and
    /// if not, why not.
    fn network_ready(&self) -> Result<(), String> {
        for dir in &self.0.cni_conf_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let found = entries.flatten().any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
            });
            if found {
                return Ok(());
            }
        }
        Err(format!(
            "no network config found in {}",
            self.0
                .cni_conf_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[tonic::async_trait]
impl RuntimeService for CriRuntime {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            // The kubelet's own version field is the API's "0.1.0".
            version: "0.1.0".into(),
            runtime_name: "hull".into(),
            runtime_version: crate::VERSION.into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let network = self.network_ready();
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network.is_ok(),
                reason: if network.is_ok() {
                    String::new()
                } else {
                    "NetworkPluginNotReady".into()
                },
                message: network
                    .err()
                    .map(|m| {
                        format!("Network plugin returns error: cni plugin not initialized: {m}")
                    })
                    .unwrap_or_default(),
            },
        ];
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info: Default::default(),
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures::default()),
            }],
            features: Some(RuntimeFeatures::default()),
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        *self.0.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = cidr;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        Err(not_yet("RunPodSandbox"))
    }

    async fn stop_pod_sandbox(
        &self,
        _: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        Err(not_yet("StopPodSandbox"))
    }

    async fn remove_pod_sandbox(
        &self,
        _: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        Err(not_yet("RemovePodSandbox"))
    }

    async fn pod_sandbox_status(
        &self,
        _: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        Err(not_yet("PodSandboxStatus"))
    }

    async fn list_pod_sandbox(
        &self,
        _: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        Err(not_yet("ListPodSandbox"))
    }

    async fn create_container(
        &self,
        _: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        Err(not_yet("CreateContainer"))
    }

    async fn start_container(
        &self,
        _: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        Err(not_yet("StartContainer"))
    }

    async fn stop_container(
        &self,
        _: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        Err(not_yet("StopContainer"))
    }

    async fn remove_container(
        &self,
        _: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        Err(not_yet("RemoveContainer"))
    }

    async fn list_containers(
        &self,
        _: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        Err(not_yet("ListContainers"))
    }

    async fn container_status(
        &self,
        _: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        Err(not_yet("ContainerStatus"))
    }

    async fn update_container_resources(
        &self,
        _: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        Err(not_yet("UpdateContainerResources"))
    }

    async fn reopen_container_log(
        &self,
        _: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        Err(not_yet("ReopenContainerLog"))
    }

    async fn exec_sync(
        &self,
        _: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        Err(not_yet("ExecSync"))
    }

    async fn exec(&self, _: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        Err(not_yet("Exec"))
    }

    async fn attach(&self, _: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        Err(not_yet("Attach"))
    }

    async fn port_forward(
        &self,
        _: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        Err(not_yet("PortForward"))
    }

    async fn container_stats(
        &self,
        _: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        Err(not_yet("ContainerStats"))
    }

    async fn list_container_stats(
        &self,
        _: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        Err(not_yet("ListContainerStats"))
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        Err(not_yet("PodSandboxStats"))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        Err(not_yet("ListPodSandboxStats"))
    }

    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(not_yet("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Err(not_yet("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Err(not_yet("ListPodSandboxMetrics"))
    }

    async fn update_pod_sandbox_resources(
        &self,
        _: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        Err(not_yet("UpdatePodSandboxResources"))
    }

    type StreamPodSandboxesStream = NoStream<StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        _: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        Err(not_yet("StreamPodSandboxes"))
    }

    type StreamContainersStream = NoStream<StreamContainersResponse>;

    async fn stream_containers(
        &self,
        _: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        Err(not_yet("StreamContainers"))
    }

    type StreamContainerStatsStream = NoStream<StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        _: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        Err(not_yet("StreamContainerStats"))
    }

    type StreamPodSandboxStatsStream = NoStream<StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        _: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        Err(not_yet("StreamPodSandboxStats"))
    }

    type GetContainerEventsStream = NoStream<ContainerEventResponse>;

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(not_yet("GetContainerEvents"))
    }

    type StreamPodSandboxMetricsStream = NoStream<StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        Err(not_yet("StreamPodSandboxMetrics"))
    }
}
