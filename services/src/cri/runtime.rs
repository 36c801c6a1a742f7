//! RuntimeService: Version, Status (RuntimeReady, and NetworkReady from
//! whether a CNI network config exists), UpdateRuntimeConfig and
//! RuntimeConfig here; the pod, container, exec and stats calls dispatch
//! to [`super::sandbox`], [`super::container`], [`super::exec`] and
//! [`super::stats`]. Calls that change state run to their end in a task of
//! their own, so a client that leaves midway cannot leave a half-made pod
//! behind. Checkpoints, metric descriptors and the streaming list calls
//! answer Unimplemented with the call's name.

use std::sync::Arc;

use hull_proto::runtime::v1::runtime_service_server::RuntimeService;
use hull_proto::runtime::v1::*;
use tonic::{Request, Response, Status};

use super::names::Abandoned;
use super::Cri;

/// The CRI API version served.
pub const API_VERSION: &str = "v1";

/// RuntimeService over [`Cri`].
#[derive(Debug, Clone)]
pub struct CriRuntime(pub Arc<Cri>);

fn not_yet(call: &str) -> Status {
    Status::unimplemented(format!("{call} is not served by hull's CRI"))
}

/// The result of a call run to its end in its own task.
fn joined<T>(r: Result<Result<T, Status>, tokio::task::JoinError>) -> Result<T, Status> {
    r.unwrap_or_else(|e| Err(Status::internal(format!("CRI call failed: {e}"))))
}

/// An empty stream of `T`, for the stream types of calls not served.
pub type NoStream<T> = tokio_stream::Empty<Result<T, Status>>;

impl CriRuntime {
    /// Whether a CNI network config exists in any of the directories, and
    /// if not, why not.
    fn network_ready(&self) -> Result<(), String> {
        for dir in [&self.0.config.cni_conf_dir] {
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
            self.0.config.cni_conf_dir.display()
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
            runtime_handlers: std::iter::once(String::new())
                .chain(self.0.config.runtimes.keys().cloned())
                .map(|name| RuntimeHandler {
                    name,
                    features: Some(RuntimeHandlerFeatures::default()),
                })
                .collect(),
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
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
        let cri = self.0.clone();
        let abandoned = Abandoned::default();
        let armed = abandoned.arm();
        // Run to the end even if the client leaves: the pod is then undone
        // rather than left half-made.
        let handle = tokio::spawn(async move {
            cri.run_pod_sandbox(config, req.runtime_handler, abandoned)
                .await
        });
        let result = joined(handle.await);
        armed.disarm();
        Ok(Response::new(RunPodSandboxResponse {
            pod_sandbox_id: result?,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let cri = self.0.clone();
        joined(tokio::spawn(async move { cri.stop_pod_sandbox(&id).await }).await)?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let cri = self.0.clone();
        joined(tokio::spawn(async move { cri.remove_pod_sandbox(&id).await }).await)?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        let (status, info) = self
            .0
            .pod_sandbox_status(&req.pod_sandbox_id, req.verbose)
            .await?;
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(status),
            info: info.into_iter().collect(),
            containers_statuses: Vec::new(),
            timestamp: crate::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let items = self.0.list_pod_sandbox(req.into_inner().filter).await?;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let cri = self.0.clone();
        let abandoned = Abandoned::default();
        let armed = abandoned.arm();
        let handle = tokio::spawn(async move {
            cri.create_container(&req.pod_sandbox_id, config, req.sandbox_config, abandoned)
                .await
        });
        let result = joined(handle.await);
        armed.disarm();
        Ok(Response::new(CreateContainerResponse {
            container_id: result?,
        }))
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        let cri = self.0.clone();
        joined(tokio::spawn(async move { cri.start_container(&id).await }).await)?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let req = req.into_inner();
        let cri = self.0.clone();
        joined(
            tokio::spawn(async move { cri.stop_container(&req.container_id, req.timeout).await })
                .await,
        )?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        let cri = self.0.clone();
        joined(tokio::spawn(async move { cri.remove_container(&id).await }).await)?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = self.0.list_containers(req.into_inner().filter).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        let (status, info) = self
            .0
            .container_status(&req.container_id, req.verbose)
            .await?;
        Ok(Response::new(ContainerStatusResponse {
            status: Some(status),
            info: info.into_iter().collect(),
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        self.0
            .update_container_resources(&req.container_id, req.linux)
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.0
            .reopen_container_log(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let req = req.into_inner();
        let out = self
            .0
            .exec_sync(&req.container_id, req.cmd, req.timeout)
            .await?;
        Ok(Response::new(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let url = self.0.exec_url(req.into_inner())?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let url = self.0.attach_url(req.into_inner())?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let url = self.0.port_forward_url(req.into_inner())?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let stats = self
            .0
            .container_stats(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let stats = self.0.list_container_stats(req.into_inner().filter).await?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let stats = self
            .0
            .pod_sandbox_stats(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let stats = self
            .0
            .list_pod_sandbox_stats(req.into_inner().filter)
            .await?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
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
