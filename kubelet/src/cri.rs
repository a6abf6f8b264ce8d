//! The kubelet's only way to a container runtime: CRI v1 (`proto::cri`).
//!
//! [`Cri`] holds a `RuntimeService` and an `ImageService` as trait objects. In-process runtimes
//! (Docker, the in-memory fake) are handed in directly; a runtime on a unix socket
//! (`--container-runtime-endpoint`) is reached through [`Remote`], which implements the same two
//! traits by forwarding to tonic clients. [`serve`] is the other end: it puts any runtime on a
//! unix socket.

use std::path::Path;
use std::sync::Arc;

use proto::cri;
use proto::cri::image_service_client::ImageServiceClient;
use proto::cri::image_service_server::{ImageService, ImageServiceServer};
use proto::cri::runtime_service_client::RuntimeServiceClient;
use proto::cri::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

pub type CriResult<T> = Result<T, Status>;

/// A runtime that serves both CRI services.
pub trait Runtime: RuntimeService + ImageService {}
impl<T: RuntimeService + ImageService> Runtime for T {}

/// The kubelet's handle on its runtime. Cheap to clone.
#[derive(Clone)]
pub struct Cri {
    rt: Arc<dyn RuntimeService>,
    img: Arc<dyn ImageService>,
}

macro_rules! calls {
    ($($(#[$doc:meta])* $field:ident . $method:ident($req:ty) -> $resp:ty;)*) => {
        $(
            $(#[$doc])*
            pub async fn $method(&self, req: $req) -> CriResult<$resp> {
                Ok(self.$field.$method(Request::new(req)).await?.into_inner())
            }
        )*
    };
}

impl Cri {
    pub fn new<R: Runtime>(runtime: Arc<R>) -> Self {
        Cri { rt: runtime.clone(), img: runtime }
    }

    /// Connects to a CRI runtime on `unix:///path` (or a bare path).
    pub async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let remote = Arc::new(Remote::connect(endpoint).await?);
        Ok(Cri::new(remote))
    }

    calls! {
        rt.version(cri::VersionRequest) -> cri::VersionResponse;
        rt.run_pod_sandbox(cri::RunPodSandboxRequest) -> cri::RunPodSandboxResponse;
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest) -> cri::StopPodSandboxResponse;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest) -> cri::RemovePodSandboxResponse;
        rt.pod_sandbox_status(cri::PodSandboxStatusRequest) -> cri::PodSandboxStatusResponse;
        rt.list_pod_sandbox(cri::ListPodSandboxRequest) -> cri::ListPodSandboxResponse;
        rt.create_container(cri::CreateContainerRequest) -> cri::CreateContainerResponse;
        rt.start_container(cri::StartContainerRequest) -> cri::StartContainerResponse;
        rt.stop_container(cri::StopContainerRequest) -> cri::StopContainerResponse;
        rt.remove_container(cri::RemoveContainerRequest) -> cri::RemoveContainerResponse;
        rt.list_containers(cri::ListContainersRequest) -> cri::ListContainersResponse;
        rt.container_status(cri::ContainerStatusRequest) -> cri::ContainerStatusResponse;
        rt.exec_sync(cri::ExecSyncRequest) -> cri::ExecSyncResponse;
        rt.exec(cri::ExecRequest) -> cri::ExecResponse;
        rt.attach(cri::AttachRequest) -> cri::AttachResponse;
        rt.port_forward(cri::PortForwardRequest) -> cri::PortForwardResponse;
        rt.container_stats(cri::ContainerStatsRequest) -> cri::ContainerStatsResponse;
        rt.list_container_stats(cri::ListContainerStatsRequest) -> cri::ListContainerStatsResponse;
        rt.update_runtime_config(cri::UpdateRuntimeConfigRequest) -> cri::UpdateRuntimeConfigResponse;
        rt.status(cri::StatusRequest) -> cri::StatusResponse;
        img.list_images(cri::ListImagesRequest) -> cri::ListImagesResponse;
        img.image_status(cri::ImageStatusRequest) -> cri::ImageStatusResponse;
        img.pull_image(cri::PullImageRequest) -> cri::PullImageResponse;
        img.remove_image(cri::RemoveImageRequest) -> cri::RemoveImageResponse;
        img.image_fs_info(cri::ImageFsInfoRequest) -> cri::ImageFsInfoResponse;
    }
}

/// A CRI runtime on a unix socket, seen through the same traits as an in-process one.
pub struct Remote {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

impl Remote {
    pub async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint).to_string();
        if path.is_empty() {
            anyhow::bail!("--container-runtime-endpoint: empty socket path");
        }
        // The URI is a placeholder: the connector below always dials the socket.
        let channel = Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the container runtime at {endpoint}: {e}"))?;
        Ok(Remote { rt: RuntimeServiceClient::new(channel.clone()), img: ImageServiceClient::new(channel) })
    }
}

macro_rules! forward {
    ($trait:ident via $client:ident; $($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl $trait for Remote {
            $(
                async fn $method(&self, req: Request<$req>) -> CriResult<Response<$resp>> {
                    self.$client.clone().$method(req.into_inner()).await
                }
            )*
        }
    };
}

forward! { RuntimeService via rt;
        version(cri::VersionRequest) -> cri::VersionResponse;
        run_pod_sandbox(cri::RunPodSandboxRequest) -> cri::RunPodSandboxResponse;
        stop_pod_sandbox(cri::StopPodSandboxRequest) -> cri::StopPodSandboxResponse;
        remove_pod_sandbox(cri::RemovePodSandboxRequest) -> cri::RemovePodSandboxResponse;
        pod_sandbox_status(cri::PodSandboxStatusRequest) -> cri::PodSandboxStatusResponse;
        list_pod_sandbox(cri::ListPodSandboxRequest) -> cri::ListPodSandboxResponse;
        create_container(cri::CreateContainerRequest) -> cri::CreateContainerResponse;
        start_container(cri::StartContainerRequest) -> cri::StartContainerResponse;
        stop_container(cri::StopContainerRequest) -> cri::StopContainerResponse;
        remove_container(cri::RemoveContainerRequest) -> cri::RemoveContainerResponse;
        list_containers(cri::ListContainersRequest) -> cri::ListContainersResponse;
        container_status(cri::ContainerStatusRequest) -> cri::ContainerStatusResponse;
        exec_sync(cri::ExecSyncRequest) -> cri::ExecSyncResponse;
        exec(cri::ExecRequest) -> cri::ExecResponse;
        attach(cri::AttachRequest) -> cri::AttachResponse;
        port_forward(cri::PortForwardRequest) -> cri::PortForwardResponse;
        container_stats(cri::ContainerStatsRequest) -> cri::ContainerStatsResponse;
        list_container_stats(cri::ListContainerStatsRequest) -> cri::ListContainerStatsResponse;
        update_runtime_config(cri::UpdateRuntimeConfigRequest) -> cri::UpdateRuntimeConfigResponse;
        status(cri::StatusRequest) -> cri::StatusResponse;
}

forward! { ImageService via img;
        list_images(cri::ListImagesRequest) -> cri::ListImagesResponse;
        image_status(cri::ImageStatusRequest) -> cri::ImageStatusResponse;
        pull_image(cri::PullImageRequest) -> cri::PullImageResponse;
        remove_image(cri::RemoveImageRequest) -> cri::RemoveImageResponse;
        image_fs_info(cri::ImageFsInfoRequest) -> cri::ImageFsInfoResponse;
}

/// Serves `runtime` as CRI v1 on the unix socket `path` until `shutdown` resolves.
pub async fn serve<R: Runtime>(
    runtime: Arc<R>,
    path: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::from_arc(runtime.clone()))
        .add_service(ImageServiceServer::from_arc(runtime))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
