//! An in-memory CRI runtime: the same services as Docker's, no processes. Containers start
//! "running" and stay so until a test makes them exit ([`FakeRuntime::exit`]). ExecSync runs
//! nothing: `true`/`false` commands answer 0/1, anything else 0 with the command echoed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use proto::cri;
use proto::cri::image_service_server::ImageService;
use proto::cri::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::now_nanos;

#[derive(Default)]
struct State {
    next_id: u64,
    next_ip: u32,
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
    images: HashSet<String>,
    /// Every call, for tests that check what the kubelet asked for.
    calls: Vec<String>,
}

#[derive(Clone)]
struct Sandbox {
    config: cri::PodSandboxConfig,
    ready: bool,
    created_at: i64,
    ip: String,
}

#[derive(Clone)]
pub struct Container {
    pub sandbox: String,
    pub config: cri::ContainerConfig,
    pub state: cri::ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes an image present, as if pulled before.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image.to_string());
    }

    /// Ends a running container with `code` (`oom` reports OOMKilled).
    pub fn exit(&self, id: &str, code: i32, oom: bool) {
        let mut s = self.lock();
        if let Some(c) = s.containers.get_mut(id) {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = code;
            c.finished_at = now_nanos();
            c.reason = if oom {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into();
        }
    }

    /// The containers whose metadata name is `name`, oldest first.
    pub fn containers_named(&self, name: &str) -> Vec<(String, Container)> {
        let s = self.lock();
        let mut v: Vec<_> = s
            .containers
            .iter()
            .filter(|(_, c)| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        v.sort_by_key(|(_, c)| c.created_at);
        v
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn record(&self, call: impl Into<String>) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.lock();
        s.calls.push(call.into());
        s
    }
}

fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} {id} not found"))
}

#[tonic::async_trait]
impl RuntimeService for FakeRuntime {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let config = req.into_inner().config.unwrap_or_default();
        let mut s = self.record(format!("RunPodSandbox {}", config.metadata.as_ref().map(|m| &*m.name).unwrap_or("")));
        s.next_id += 1;
        s.next_ip += 1;
        let id = format!("sandbox-{:04}", s.next_id);
        let host = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|c| c.namespace_options.as_ref())
            .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32);
        let ip = if host { String::new() } else { format!("10.244.0.{}", s.next_ip + 1) };
        s.sandboxes.insert(id.clone(), Sandbox { config, ready: true, created_at: now_nanos(), ip });
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let mut s = self.record(format!("StopPodSandbox {id}"));
        if let Some(sb) = s.sandboxes.get_mut(&id) {
            sb.ready = false;
        }
        let now = now_nanos();
        for c in
            s.containers.values_mut().filter(|c| c.sandbox == id && c.state == cri::ContainerState::ContainerRunning)
        {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = 137;
            c.finished_at = now;
            c.reason = "Error".into();
        }
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let mut s = self.record(format!("RemovePodSandbox {id}"));
        s.sandboxes.remove(&id);
        s.containers.retain(|_, c| c.sandbox != id);
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let s = self.lock();
        let sb = s.sandboxes.get(&id).ok_or_else(|| not_found("sandbox", &id))?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: id.clone(),
                metadata: sb.config.metadata.clone(),
                state: if sb.ready { cri::PodSandboxState::SandboxReady } else { cri::PodSandboxState::SandboxNotready }
                    as i32,
                created_at: sb.created_at,
                network: Some(cri::PodSandboxNetworkStatus { ip: sb.ip.clone(), additional_ips: vec![] }),
                linux: None,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                runtime_handler: String::new(),
            }),
            info: HashMap::new(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter;
        let s = self.lock();
        let items = s
            .sandboxes
            .iter()
            .map(|(id, sb)| cri::PodSandbox {
                id: id.clone(),
                metadata: sb.config.metadata.clone(),
                state: if sb.ready { cri::PodSandboxState::SandboxReady } else { cri::PodSandboxState::SandboxNotready }
                    as i32,
                created_at: sb.created_at,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .filter(|sb| super::sandbox_matches(sb, &filter))
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let config = req.config.unwrap_or_default();
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let mut s = self.record(format!("CreateContainer {name}"));
        if !s.sandboxes.contains_key(&req.pod_sandbox_id) {
            return Err(not_found("sandbox", &req.pod_sandbox_id));
        }
        s.next_id += 1;
        let id = format!("container-{:04}", s.next_id);
        s.containers.insert(
            id.clone(),
            Container {
                sandbox: req.pod_sandbox_id,
                config,
                state: cri::ContainerState::ContainerCreated,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
            },
        );
        Ok(Response::new(cri::CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        let mut s = self.record(format!("StartContainer {id}"));
        let c = s.containers.get_mut(&id).ok_or_else(|| not_found("container", &id))?;
        c.state = cri::ContainerState::ContainerRunning;
        c.started_at = now_nanos();
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        let mut s = self.record(format!("StopContainer {id}"));
        if let Some(c) = s.containers.get_mut(&id)
            && c.state == cri::ContainerState::ContainerRunning
        {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = 143;
            c.finished_at = now_nanos();
            c.reason = "Error".into();
        }
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.record(format!("RemoveContainer {id}")).containers.remove(&id);
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = req.into_inner().filter;
        let s = self.lock();
        let containers = s
            .containers
            .iter()
            .map(|(id, c)| cri::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: c.config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: String::new(),
            })
            .filter(|c| super::container_matches(c, &filter))
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let id = req.into_inner().container_id;
        let s = self.lock();
        let c = s.containers.get(&id).ok_or_else(|| not_found("container", &id))?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                id: id.clone(),
                metadata: c.config.metadata.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: c.finished_at,
                exit_code: c.exit_code,
                image: c.config.image.clone(),
                image_ref: c.config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
                reason: c.reason.clone(),
                message: String::new(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                mounts: c.config.mounts.clone(),
                log_path: String::new(),
                image_id: String::new(),
            }),
            info: HashMap::new(),
        }))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        let s = self.record(format!("ExecSync {}", req.cmd.join(" ")));
        let running =
            s.containers.get(&req.container_id).is_some_and(|c| c.state == cri::ContainerState::ContainerRunning);
        if !running {
            return Err(Status::failed_precondition("container is not running"));
        }
        let exit_code = i32::from(req.cmd.first().map(String::as_str) == Some("false"));
        Ok(Response::new(cri::ExecSyncResponse { stdout: req.cmd.join(" ").into_bytes(), stderr: vec![], exit_code }))
    }

    async fn exec(&self, _: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        Err(Status::unimplemented("the fake runtime does not stream"))
    }

    async fn attach(&self, _: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
        Err(Status::unimplemented("the fake runtime does not stream"))
    }

    async fn port_forward(
        &self,
        _: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        Err(Status::unimplemented("the fake runtime does not stream"))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        let s = self.lock();
        let c = s.containers.get(&id).ok_or_else(|| not_found("container", &id))?;
        Ok(Response::new(cri::ContainerStatsResponse { stats: Some(fake_stats(&id, c)) }))
    }

    async fn list_container_stats(
        &self,
        _: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let s = self.lock();
        let stats = s
            .containers
            .iter()
            .filter(|(_, c)| c.state == cri::ContainerState::ContainerRunning)
            .map(|(id, c)| fake_stats(id, c))
            .collect();
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, _: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        let cond = |t: &str| cri::RuntimeCondition { r#type: t.into(), status: true, ..Default::default() };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions: vec![cond("RuntimeReady"), cond("NetworkReady")] }),
            info: HashMap::new(),
        }))
    }
}

fn fake_stats(id: &str, c: &Container) -> cri::ContainerStats {
    let ts = now_nanos();
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: id.to_string(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: ((ts - c.started_at).max(0) / 100) as u64 }),
            usage_nano_cores: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: ts,
            working_set_bytes: Some(cri::UInt64Value { value: 1 << 20 }),
            usage_bytes: Some(cri::UInt64Value { value: 1 << 20 }),
            ..Default::default()
        }),
        writable_layer: None,
    }
}

#[tonic::async_trait]
impl ImageService for FakeRuntime {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let s = self.lock();
        let images = s
            .images
            .iter()
            .map(|i| cri::Image { id: i.clone(), repo_tags: vec![i.clone()], ..Default::default() })
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        let s = self.lock();
        let found = s.images.contains(&image).then(|| cri::Image {
            id: image.clone(),
            repo_tags: vec![image.clone()],
            ..Default::default()
        });
        Ok(Response::new(cri::ImageStatusResponse { image: found, info: HashMap::new() }))
    }

    /// Pulls succeed unless the image name contains "missing" (a registry without it) or
    /// "private" and no credentials came along.
    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let mut s = self.record(format!("PullImage {image}"));
        if image.contains("missing") {
            return Err(Status::not_found(format!("pull access denied for {image}: repository does not exist")));
        }
        if image.contains("private") && req.auth.is_none() {
            return Err(Status::permission_denied(format!("pull access denied for {image}: authentication required")));
        }
        s.images.insert(image.clone());
        Ok(Response::new(cri::PullImageResponse { image_ref: image }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        self.lock().images.remove(&image);
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        Ok(Response::new(cri::ImageFsInfoResponse::default()))
    }
}
