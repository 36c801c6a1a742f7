//! `containerd.services.introspection.v1.Introspection`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use hull_proto::containerd::services::introspection::v1::{
    introspection_server::Introspection, Plugin, PluginsRequest, PluginsResponse, ServerResponse,
};
use hull_proto::containerd::types::Platform;

use crate::filters::{Adaptor, Filter};
use crate::metadata::MetaDb;

/// One thing hulld serves, described as containerd describes its plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// e.g. `io.containerd.grpc.v1`.
    pub kind: String,
    /// e.g. `content`.
    pub id: String,
    /// Plugin types it builds on.
    pub requires: Vec<String>,
    /// Whether it is tied to this machine's platform (snapshotters).
    pub platform_bound: bool,
    /// Optional features.
    pub capabilities: Vec<String>,
    /// Facts a client may rely on, as containerd's plugins export them
    /// (the content plugin's `root`).
    pub exports: std::collections::BTreeMap<String, String>,
}

impl PluginInfo {
    /// A plugin of `kind` named `id`.
    pub fn new(kind: &str, id: &str, requires: &[&str]) -> Self {
        PluginInfo {
            kind: kind.to_owned(),
            id: id.to_owned(),
            requires: requires.iter().map(|s| (*s).to_owned()).collect(),
            platform_bound: false,
            capabilities: Vec::new(),
            exports: Default::default(),
        }
    }
}

struct PluginView<'a>(&'a PluginInfo);

impl Adaptor for PluginView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "type" => Some(self.0.kind.clone()),
            "id" => Some(self.0.id.clone()),
            "capabilities" => Some(self.0.capabilities.join(",")),
            _ => None,
        }
    }
}

/// Lists what is served and reports the server UUID.
#[derive(Debug)]
pub struct IntrospectionService {
    db: Arc<MetaDb>,
    plugins: Vec<PluginInfo>,
}

impl IntrospectionService {
    /// Describes `plugins`; the UUID comes from `db`.
    pub fn new(db: Arc<MetaDb>, plugins: Vec<PluginInfo>) -> Self {
        IntrospectionService { db, plugins }
    }
}

fn host_platform() -> Platform {
    let host = hull_oci::platform::host();
    Platform {
        os: host.os().to_string(),
        architecture: host.architecture().to_string(),
        variant: host.variant().clone().unwrap_or_default(),
        os_version: String::new(),
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = Filter::parse(&req.into_inner().filters).map_err(super::status)?;
        let plugins = self
            .plugins
            .iter()
            .filter(|p| filter.matches(&PluginView(p)))
            .map(|p| Plugin {
                r#type: p.kind.clone(),
                id: p.id.clone(),
                requires: p.requires.clone(),
                platforms: if p.platform_bound {
                    vec![host_platform()]
                } else {
                    Vec::new()
                },
                exports: p.exports.clone(),
                capabilities: p.capabilities.clone(),
                init_err: None,
            })
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        let db = self.db.clone();
        let uuid = super::run(move || db.server_uuid()).await?;
        Ok(Response::new(ServerResponse { uuid }))
    }
}
