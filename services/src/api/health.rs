//! `grpc.health.v1.Health`: SERVING while hulld serves.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use hull_proto::grpc::health::v1::health_check_response::ServingStatus;
use hull_proto::grpc::health::v1::{
    health_server::Health, HealthCheckRequest, HealthCheckResponse,
};

/// Health checks; watches end when the daemon shuts down.
#[derive(Debug)]
pub struct HealthService {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl HealthService {
    /// A health service whose watches end with `shutdown`.
    pub fn new(shutdown: CancellationToken, tasks: TaskTracker) -> Self {
        HealthService { shutdown, tasks }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(response(ServingStatus::Serving)))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            if tx.send(Ok(response(ServingStatus::Serving))).await.is_err() {
                return;
            }
            tokio::select! {
                _ = token.cancelled() => {
                    let _ = tx.send(Ok(response(ServingStatus::NotServing))).await;
                }
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
