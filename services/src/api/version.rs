//! `containerd.services.version.v1.Version`.

use tonic::{Request, Response, Status};

use hull_proto::containerd::services::version::v1::{version_server::Version, VersionResponse};

/// Answers with hulld's version and source revision.
#[derive(Debug, Default)]
pub struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: crate::VERSION.to_owned(),
            revision: env!("HULL_REVISION").to_owned(),
        }))
    }
}
