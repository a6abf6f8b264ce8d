//! One worker per pod UID: observe the runtime, plan with `compute_pod_actions`, act, report
//! status; terminate gracefully when the pod is deleted. Updates to the pod coalesce: the worker
//! always syncs against the newest spec it has.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use proto::cri;
use tokio::sync::{Notify, mpsc};

use super::actions::{ContainerObs, Observed, PlanContext, SandboxObs, Which, compute_pod_actions};
use super::admission::Rejection;
use super::backoff::Backoff;
use super::env::{NodeAllocatable, container_env, service_env};
use super::probes::{ProbeTarget, SharedResults, run_hook, spawn_prober};
use super::source::ObjectSource;
use super::spec::{self, LABEL_CONTAINER_NAME, LABEL_POD_UID, SpecContext};
use super::status::{StatusInput, generate_pod_status};
use super::volumes::{self, TokenCache};
use crate::cri::Cri;
use crate::events::Recorder;

/// Where pod status goes, and the final delete: the apiserver, or memory in tests.
#[async_trait::async_trait]
pub trait PodApi: Send + Sync {
    async fn update_status(&self, pod: &Pod, status: &PodStatus) -> Result<(), String>;
    /// Removes the pod object once everything on the node has stopped (grace period 0).
    async fn delete_final(&self, pod: &Pod) -> Result<(), String>;
}

/// What every worker shares.
pub struct NodeContext {
    pub host_ip: String,
    pub cri: Cri,
    pub source: Arc<dyn ObjectSource>,
    pub api: Arc<dyn PodApi>,
    pub events: Recorder,
    pub spec: SpecContext,
    pub allocatable: NodeAllocatable,
    /// How often a worker syncs with nothing happening.
    pub resync: Duration,
    /// Images seen present lately (image -> (when, id)): pods of one image do not each ask.
    pub images: std::sync::Mutex<HashMap<String, (Instant, String)>>,
}

pub enum Update {
    Pod(Box<Pod>),
    /// The pod object is gone from the API.
    Deleted,
}

pub struct PodWorker {
    ctx: Arc<NodeContext>,
    pod: Pod,
    /// The runtime cannot hold anything for this pod yet (it appeared after the startup listing
    /// and this worker has not acted): the first sync skips asking.
    fresh: bool,
    /// The node did not admit the pod: it is reported Failed and never runs.
    rejected: Option<Rejection>,
    gone: bool,
    backoff: Backoff,
    pull_backoff: Backoff,
    pull_failed_at: HashMap<String, i64>,
    waiting: HashMap<String, (String, String)>,
    probers: HashMap<String, tokio::task::JoinHandle<()>>,
    results: SharedResults,
    wake: Arc<Notify>,
    tokens: TokenCache,
    messages: HashMap<String, String>,
    last_status: Option<PodStatus>,
    volume_paths: HashMap<String, PathBuf>,
    last_volume_sync: Option<Instant>,
}

fn now_nanos() -> i64 {
    crate::runtime::now_nanos()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl PodWorker {
    pub fn new(ctx: Arc<NodeContext>, pod: Pod) -> Self {
        PodWorker {
            ctx,
            pod,
            fresh: false,
            rejected: None,
            gone: false,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            pull_failed_at: HashMap::new(),
            waiting: HashMap::new(),
            probers: HashMap::new(),
            results: Default::default(),
            wake: Arc::new(Notify::new()),
            tokens: TokenCache::default(),
            messages: HashMap::new(),
            last_status: None,
            volume_paths: HashMap::new(),
            last_volume_sync: None,
        }
    }

    /// Marks the pod as new to the runtime (see `fresh`).
    pub fn fresh(mut self) -> Self {
        self.fresh = true;
        self
    }

    /// Marks the pod as not admitted (see `rejected`).
    pub fn rejected(mut self, why: Rejection) -> Self {
        self.rejected = Some(why);
        self
    }

    /// Syncs until the pod is gone from the node.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Update>) {
        loop {
            let next = match self.sync().await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "sync failed; retrying");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                u = rx.recv() => {
                    let mut update = u;
                    loop {
                        match update {
                            Some(Update::Pod(p)) => self.pod = *p,
                            Some(Update::Deleted) | None => self.gone = true,
                        }
                        match rx.try_recv() {
                            Ok(u) => update = Some(u),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep(next) => {}
                _ = self.wake.notified() => {}
            }
        }
        for (_, p) in self.probers.drain() {
            p.abort();
        }
    }

    /// A rejected pod: Failed with the rejection's reason (once), then only its deletion.
    async fn sync_rejected(&mut self, why: &Rejection) -> Result<Option<Duration>, String> {
        if self.gone {
            return Ok(None);
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            self.ctx.api.delete_final(&self.pod).await?;
            return Ok(None);
        }
        if self.last_status.is_none() {
            let message = format!("Pod was rejected: {}", why.message);
            tracing::info!(pod = %self.key(), reason = %why.reason, %message, "pod not admitted");
            let status = PodStatus {
                phase: Some("Failed".into()),
                reason: Some(why.reason.clone()),
                message: Some(message.clone()),
                ..Default::default()
            };
            self.ctx.api.update_status(&self.pod, &status).await?;
            self.ctx.events.warning(&self.pod, &why.reason, &why.message);
            self.last_status = Some(status);
        }
        Ok(Some(self.ctx.resync * 6))
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.clone().unwrap_or_default(),
            self.pod.metadata.name.clone().unwrap_or_default()
        )
    }

    /// One pass. `Ok(None)` when the pod is finished on this node for good.
    async fn sync(&mut self) -> Result<Option<Duration>, String> {
        if let Some(why) = self.rejected.clone() {
            return self.sync_rejected(&why).await;
        }
        let obs = if std::mem::take(&mut self.fresh) { Observed::default() } else { self.observe().await? };
        if self.gone {
            // Deleted from the API without us (forced, or while we were down): stop at once.
            self.kill_everything(&obs, 0).await;
            self.cleanup(&obs).await;
            return Ok(None);
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            let grace = self.pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0);
            self.kill_everything(&obs, grace).await;
            let obs = self.observe().await?;
            self.report(&obs, &[], false).await;
            self.ctx.api.delete_final(&self.pod).await?;
            self.cleanup(&obs).await;
            return Ok(None);
        }
        // A pod is finished once the API or this worker says so: a watch event older than our
        // own status update must not bring a finished pod back to life.
        let terminal =
            |s: Option<&PodStatus>| matches!(s.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        if terminal(self.pod.status.as_ref()) || terminal(self.last_status.as_ref()) {
            // Finished: nothing runs again; the sandbox goes so its IP is free.
            self.stop_probers(&HashSet::new());
            for s in obs.sandboxes.iter().filter(|s| s.ready) {
                let _ =
                    self.ctx.cri.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
            }
            return Ok(Some(self.ctx.resync * 6));
        }

        self.collect_termination_messages(&obs);
        let running: HashSet<String> = obs.running().map(|c| c.id.clone()).collect();
        self.stop_probers(&running);
        let (unhealthy, started) = {
            let r = self.results.lock().unwrap_or_else(|e| e.into_inner());
            (r.unhealthy.clone(), r.started.clone())
        };
        let plan_ctx =
            PlanContext { now: now_nanos(), backoff: &self.backoff, unhealthy: &unhealthy, started: &started };
        let actions = compute_pod_actions(&self.pod, &obs, &plan_ctx);
        tracing::debug!(pod = %self.key(), ?actions, "planned");
        let grace = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);

        if actions.kill_pod {
            self.kill_everything(&obs, grace).await;
        }
        for (id, name, reason) in &actions.kill {
            if reason == "Unhealthy" {
                self.kill_container(&obs, id, name, grace).await;
                self.results.lock().unwrap_or_else(|e| e.into_inner()).unhealthy.remove(id);
            } else {
                let _ = self.ctx.cri.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await;
            }
        }
        let mut sandbox_id = actions.sandbox_id.clone();
        let mut pod_ip = obs.current_sandbox().map(|s| s.ip.clone()).unwrap_or_default();
        let needs_volumes = actions.create_sandbox.is_some()
            || self.last_volume_sync.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if needs_volumes && !actions.pod_failed {
            match volumes::setup_volumes(
                &self.pod,
                &self.ctx.spec.root_dir,
                &*self.ctx.source,
                &self.ctx.allocatable,
                &mut self.tokens,
            )
            .await
            {
                Ok(paths) => {
                    self.volume_paths = paths;
                    self.last_volume_sync = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "volumes not ready");
                    self.ctx.events.warning(&self.pod, "FailedMount", &e);
                    if actions.create_sandbox.is_some() || self.volume_paths.is_empty() && has_volumes(&self.pod) {
                        self.report(&obs, &actions.backoff, actions.pod_failed).await;
                        return Ok(Some(Duration::from_secs(2)));
                    }
                }
            }
        }
        if let Some(attempt) = actions.create_sandbox {
            if attempt > 0 {
                self.ctx.events.normal(
                    &self.pod,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.",
                );
            }
            let config = spec::sandbox_config(&self.pod, attempt, &self.ctx.spec);
            match self
                .ctx
                .cri
                .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
                .await
            {
                Ok(r) => sandbox_id = r.pod_sandbox_id,
                Err(e) => {
                    let msg = format!("Failed to create pod sandbox: {}", e.message());
                    self.ctx.events.warning(&self.pod, "FailedCreatePodSandBox", &msg);
                    self.report(&obs, &actions.backoff, actions.pod_failed).await;
                    return Ok(Some(Duration::from_secs(2)));
                }
            }
            pod_ip = self
                .ctx
                .cri
                .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.clone(), verbose: false })
                .await
                .ok()
                .and_then(|s| s.status)
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default();
        }
        if !sandbox_id.is_empty() && !spec::host_network(&self.pod) {
            let hosts = volumes::pod_dir(&self.ctx.spec.root_dir, &uid(&self.pod)).join("etc-hosts");
            let content = spec::hosts_file(&self.pod, &pod_ip, &self.ctx.spec.cluster_domain);
            if std::fs::read_to_string(&hosts).ok().as_deref() != Some(content.as_str()) {
                if let Some(dir) = hosts.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::write(&hosts, content).map_err(|e| format!("{}: {e}", hosts.display()))?;
            }
        }
        let ip = if spec::host_network(&self.pod) { self.ctx.host_ip.clone() } else { pod_ip.clone() };
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut started = Vec::new();
        let mut failed_any = false;
        for which in &actions.start {
            let container = match which {
                Which::Init(i) => spec.init_containers.as_ref().and_then(|c| c.get(*i)).cloned(),
                Which::App(i) => spec.containers.get(*i).cloned(),
            };
            let Some(container) = container else { continue };
            match self.start_container(&obs, &sandbox_id, &container, &ip).await {
                Some(id) => started.push(id),
                None => {
                    failed_any = true;
                    // Init containers run one at a time; a failed start stops the sequence.
                    if matches!(which, Which::Init(_)) {
                        break;
                    }
                }
            }
        }
        for (name, _) in &actions.backoff {
            self.ctx.events.warning(
                &self.pod,
                "BackOff",
                &format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    self.pod.metadata.name.clone().unwrap_or_default(),
                    self.pod.metadata.namespace.clone().unwrap_or_default(),
                    uid(&self.pod)
                ),
            );
        }

        let obs = if actions.kill_pod || !actions.kill.is_empty() || failed_any {
            self.observe().await?
        } else if !started.is_empty() || actions.create_sandbox.is_some() {
            // Only additions: ask about the new containers instead of listing everything again.
            let mut o = obs;
            if let Some(attempt) = actions.create_sandbox {
                o.sandboxes.push(SandboxObs {
                    id: sandbox_id.clone(),
                    attempt,
                    ready: true,
                    created_at: now_nanos(),
                    ip: pod_ip.clone(),
                });
            }
            for id in &started {
                if let Some(c) = self.container_obs(id, &sandbox_id).await {
                    o.containers.push(c);
                }
            }
            o.sort();
            o
        } else {
            obs
        };
        self.collect_termination_messages(&obs);
        self.ensure_probers(&obs, &ip);
        self.remove_dead_instances(&obs).await;
        let status = self.report(&obs, &actions.backoff, actions.pod_failed).await;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            for s in obs.sandboxes.iter().filter(|s| s.ready) {
                let _ =
                    self.ctx.cri.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
            }
        }
        let mut next = self.ctx.resync;
        for (_, wait) in &actions.backoff {
            next = next.min(*wait + Duration::from_millis(50));
        }
        if !self.waiting.is_empty() {
            next = next.min(Duration::from_secs(2));
        }
        if let Some(init_running) = obs.running().next()
            && spec.init_containers.as_ref().is_some_and(|ic| ic.iter().any(|c| c.name == init_running.name))
        {
            next = next.min(Duration::from_secs(1));
        }
        Ok(Some(next))
    }

    async fn observe(&self) -> Result<Observed, String> {
        let selector = HashMap::from([(LABEL_POD_UID.to_string(), uid(&self.pod))]);
        let sandboxes = self
            .ctx
            .cri
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter { label_selector: selector.clone(), ..Default::default() }),
            })
            .await
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?
            .items;
        let mut obs = Observed::default();
        for s in sandboxes {
            let ready = s.state == cri::PodSandboxState::SandboxReady as i32;
            let ip = if ready {
                self.ctx
                    .cri
                    .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: s.id.clone(), verbose: false })
                    .await
                    .ok()
                    .and_then(|r| r.status)
                    .and_then(|st| st.network)
                    .map(|n| n.ip)
                    .unwrap_or_default()
            } else {
                String::new()
            };
            obs.sandboxes.push(SandboxObs {
                id: s.id,
                attempt: s.metadata.map(|m| m.attempt).unwrap_or(0),
                ready,
                created_at: s.created_at,
                ip,
            });
        }
        let containers = self
            .ctx
            .cri
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter { label_selector: selector, ..Default::default() }),
            })
            .await
            .map_err(|e| format!("ListContainers: {}", e.message()))?
            .containers;
        for c in containers {
            if let Some(o) = self.container_obs(&c.id, &c.pod_sandbox_id).await {
                obs.containers.push(o);
            }
        }
        obs.sort();
        Ok(obs)
    }

    fn container_spec(&self, name: &str) -> Option<Container> {
        super::env::all_containers(&self.pod).into_iter().find(|c| c.name == name)
    }

    /// Reads termination messages of containers that exited since the last pass.
    fn collect_termination_messages(&mut self, obs: &Observed) {
        let u = uid(&self.pod);
        for c in obs.containers.iter().filter(|c| c.state == cri::ContainerState::ContainerExited) {
            if self.messages.contains_key(&c.id) {
                continue;
            }
            let path = spec::termination_log_path(&self.ctx.spec.root_dir, &u, &c.name, c.attempt);
            let mut msg = std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            let policy = self.container_spec(&c.name).and_then(|s| s.termination_message_policy).unwrap_or_default();
            if msg.is_empty() && policy == "FallbackToLogsOnError" && c.exit_code != 0 {
                msg = crate::logs::tail_text(&c.log_path, 80, 2048);
            }
            self.messages.insert(c.id.clone(), msg);
        }
    }

    /// Stops probers of containers that no longer run, and forgets their results.
    fn stop_probers(&mut self, running: &HashSet<String>) {
        let gone: Vec<String> = self.probers.keys().filter(|id| !running.contains(*id)).cloned().collect();
        if gone.is_empty() {
            return;
        }
        let mut r = self.results.lock().unwrap_or_else(|e| e.into_inner());
        for id in gone {
            if let Some(p) = self.probers.remove(&id) {
                p.abort();
            }
            r.ready.remove(&id);
            r.started.remove(&id);
            r.unhealthy.remove(&id);
        }
    }

    fn ensure_probers(&mut self, obs: &Observed, ip: &str) {
        for c in obs.running() {
            if self.probers.contains_key(&c.id) {
                continue;
            }
            let Some(container) = self.container_spec(&c.name) else { continue };
            let target = ProbeTarget {
                pod: self.pod.clone(),
                container,
                container_id: c.id.clone(),
                ip: ip.to_string(),
                cri: self.ctx.cri.clone(),
                results: self.results.clone(),
                wake: self.wake.clone(),
                events: self.ctx.events.clone(),
            };
            self.probers.insert(c.id.clone(), spawn_prober(target));
        }
    }

    /// Pulls the image as `imagePullPolicy` says. `Err` is (reason, message) for the status.
    async fn ensure_image(&mut self, c: &Container) -> Result<String, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let spec_image = cri::ImageSpec { image: image.clone(), ..Default::default() };
        let cached = (policy != "Always")
            .then(|| self.ctx.images.lock().unwrap_or_else(|e| e.into_inner()).get(&image).cloned())
            .flatten();
        let present = match cached.filter(|(at, _)| at.elapsed() < Duration::from_secs(30)) {
            Some((_, id)) => Some(cri::Image { id, ..Default::default() }),
            None => {
                let found = self
                    .ctx
                    .cri
                    .image_status(cri::ImageStatusRequest { image: Some(spec_image.clone()), verbose: false })
                    .await
                    .map_err(|e| ("ErrImagePull".to_string(), e.message().to_string()))?
                    .image;
                if let Some(i) = &found {
                    self.ctx
                        .images
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(image.clone(), (Instant::now(), i.id.clone()));
                }
                found
            }
        };
        if policy == "Never" {
            return match present {
                Some(i) => Ok(i.id),
                None => {
                    let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                    self.ctx.events.warning(&self.pod, "ErrImageNeverPull", &msg);
                    Err(("ErrImageNeverPull".into(), msg))
                }
            };
        }
        if let Some(i) = &present
            && policy == "IfNotPresent"
        {
            self.ctx.events.normal(
                &self.pod,
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(i.id.clone());
        }
        if let Some(since) = self.pull_failed_at.get(&image)
            && let Some(wait) = self.pull_backoff.remaining(&image, *since, now_nanos())
        {
            let msg = format!("Back-off pulling image \"{image}\"");
            let _ = wait;
            self.ctx.events.normal(&self.pod, "BackOff", &msg);
            return Err(("ImagePullBackOff".into(), msg));
        }
        self.ctx.events.normal(&self.pod, "Pulling", &format!("Pulling image \"{image}\""));
        let started = Instant::now();
        let auth = self.pull_credentials(&image).await;
        match self
            .ctx
            .cri
            .pull_image(cri::PullImageRequest { image: Some(spec_image), auth, sandbox_config: None })
            .await
        {
            Ok(r) => {
                self.pull_backoff.reset(&image);
                self.pull_failed_at.remove(&image);
                self.ctx.events.normal(
                    &self.pod,
                    "Pulled",
                    &format!("Successfully pulled image \"{image}\" in {:.3}s", started.elapsed().as_secs_f64()),
                );
                Ok(r.image_ref)
            }
            Err(e) if policy == "Always" && present.is_some() && e.code() == tonic::Code::Unavailable => {
                // A registry that cannot be reached (no network here) does not stop a pod whose
                // image is here, but say so. A registry that refuses the pod's credentials does.
                self.ctx.events.warning(
                    &self.pod,
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {}; using the local copy", e.message()),
                );
                Ok(present.map(|i| i.id).unwrap_or_default())
            }
            Err(e) => {
                let msg = format!("Failed to pull image \"{image}\": {}", e.message());
                self.ctx.events.warning(&self.pod, "Failed", &msg);
                self.pull_backoff.started(&image);
                self.pull_failed_at.insert(image.clone(), now_nanos());
                Err(("ErrImagePull".into(), msg))
            }
        }
    }

    /// Credentials for `image`'s registry from the pod's imagePullSecrets
    /// (`kubernetes.io/dockerconfigjson` or `.dockercfg`).
    async fn pull_credentials(&self, image: &str) -> Option<cri::AuthConfig> {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let first = image.split('/').next().unwrap_or("");
        let registry = if image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
            first
        } else {
            "docker.io"
        };
        for s in self.pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default() {
            let Ok(Some(data)) = self.ctx.source.secret(&ns, &s.name).await else { continue };
            let json = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg"));
            let Some(v) = json.and_then(|j| serde_json::from_slice::<serde_json::Value>(j).ok()) else { continue };
            let auths = v.get("auths").cloned().unwrap_or(v);
            let Some(map) = auths.as_object() else { continue };
            for (server, entry) in map {
                let host =
                    server.trim_start_matches("https://").trim_start_matches("http://").split('/').next().unwrap_or("");
                let matches = host == registry || (registry == "docker.io" && host.ends_with("docker.io"));
                if !matches {
                    continue;
                }
                let get = |k: &str| entry.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                return Some(cri::AuthConfig {
                    username: get("username"),
                    password: get("password"),
                    auth: get("auth"),
                    server_address: server.clone(),
                    ..Default::default()
                });
            }
        }
        None
    }

    async fn services_env(&self) -> Vec<(String, String)> {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let links = self.pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        let mut services = Vec::new();
        if links {
            services.extend(self.ctx.source.services(&ns).await.unwrap_or_default());
        }
        if (ns != "default" || !links)
            && let Ok(defaults) = self.ctx.source.services("default").await
        {
            services.extend(defaults.into_iter().filter(|s| s.metadata.name.as_deref() == Some("kubernetes")));
        }
        service_env(&services)
    }

    async fn build_config(
        &mut self,
        c: &Container,
        attempt: u32,
        pod_ip: &str,
    ) -> Result<cri::ContainerConfig, (String, String)> {
        let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let services = self.services_env().await;
        let mut pod_for_env = self.pod.clone();
        // The status may not carry the IPs yet on the pod's first start.
        let st = pod_for_env.status.get_or_insert_with(Default::default);
        st.host_ip.get_or_insert(self.ctx.host_ip.clone());
        if !pod_ip.is_empty() && st.pod_ip.as_deref().is_none_or(str::is_empty) {
            st.pod_ip = Some(pod_ip.to_string());
            st.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP { ip: pod_ip.to_string() }]);
        }
        let env = container_env(&pod_for_env, c, &services, &self.ctx.allocatable, &*self.ctx.source)
            .await
            .map_err(config_err)?;
        let (command, args) = spec::command_and_args(c, &env);
        let u = uid(&self.pod);
        let mut mounts = Vec::new();
        let volumes = self.pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        for m in c.volume_mounts.clone().unwrap_or_default() {
            let Some(base) = self.volume_paths.get(&m.name) else {
                return Err(config_err(format!("volume \"{}\" is not mounted", m.name)));
            };
            let vol = volumes.iter().find(|v| v.name == m.name);
            let api_backed = vol.is_some_and(|v| {
                v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
            });
            let sub = match (&m.sub_path, &m.sub_path_expr) {
                (Some(s), _) if !s.is_empty() => s.clone(),
                (_, Some(e)) if !e.is_empty() => {
                    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    super::env::expand(e, &|n| vars.get(n).map(|v| v.to_string()))
                }
                _ => String::new(),
            };
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(config_err(format!("subPath {sub:?} must be a relative path without \"..\"")));
            }
            let host_path = if sub.is_empty() {
                base.clone()
            } else {
                let p = base.join(&sub);
                if !p.exists() && !api_backed {
                    std::fs::create_dir_all(&p).map_err(|e| config_err(format!("subPath {}: {e}", p.display())))?;
                }
                p
            };
            mounts.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: m.read_only == Some(true) || api_backed,
                selinux_relabel: false,
                propagation: match m.mount_propagation.as_deref() {
                    Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
                    Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
                    _ => cri::MountPropagation::PropagationPrivate,
                } as i32,
            });
        }
        if !spec::host_network(&self.pod) && !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            let hosts = volumes::pod_dir(&self.ctx.spec.root_dir, &u).join("etc-hosts");
            mounts.push(cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        let term_path = c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/dev/termination-log".into());
        let term_file = spec::termination_log_path(&self.ctx.spec.root_dir, &u, &c.name, attempt);
        if let Some(dir) = term_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| config_err(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(&term_file, b"").map_err(|e| config_err(format!("{}: {e}", term_file.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666));
        }
        mounts.push(cri::Mount {
            container_path: term_path,
            host_path: term_file.to_string_lossy().into_owned(),
            ..Default::default()
        });

        let mut labels = spec::pod_labels(&self.pod);
        labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
        Ok(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt }),
            image: Some(cri::ImageSpec { image: c.image.clone().unwrap_or_default(), ..Default::default() }),
            command,
            args,
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: env.into_iter().map(|(key, value)| cri::KeyValue { key, value }).collect(),
            mounts,
            devices: vec![],
            labels,
            annotations: HashMap::new(),
            log_path: format!("{}/{attempt}.log", c.name),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(spec::linux_resources(&self.pod, c, self.ctx.spec.node_memory_bytes)),
                security_context: Some(spec::security_context(&self.pod, c)),
            }),
        })
    }

    /// One container as the runtime reports it now.
    async fn container_obs(&self, id: &str, sandbox_id: &str) -> Option<ContainerObs> {
        let st = self
            .ctx
            .cri
            .container_status(cri::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
            .await
            .ok()?
            .status?;
        Some(ContainerObs {
            id: id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            name: st
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .or(st.metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default(),
            attempt: st.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            state: cri::ContainerState::try_from(st.state).unwrap_or(cri::ContainerState::ContainerUnknown),
            created_at: st.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            exit_code: st.exit_code,
            reason: st.reason,
            message: st.message,
            image: st.image.map(|i| i.image).unwrap_or_default(),
            image_ref: st.image_ref,
            log_path: st.log_path,
        })
    }

    /// Pulls, creates and starts one container, then runs its postStart hook. `None` when it
    /// did not come up (the reason is kept for the status).
    async fn start_container(&mut self, obs: &Observed, sandbox_id: &str, c: &Container, ip: &str) -> Option<String> {
        let attempt = obs.latest(&c.name).map(|l| l.attempt + 1).unwrap_or(0);
        if let Err((reason, msg)) = self.ensure_image(c).await {
            self.waiting.insert(c.name.clone(), (reason, msg));
            return None;
        }
        let config = match self.build_config(c, attempt, ip).await {
            Ok(cfg) => cfg,
            Err((reason, msg)) => {
                self.ctx.events.warning(&self.pod, "Failed", &format!("Error: {msg}"));
                self.waiting.insert(c.name.clone(), (reason, msg));
                return None;
            }
        };
        let sandbox_config = spec::sandbox_config(&self.pod, 0, &self.ctx.spec);
        let created = self
            .ctx
            .cri
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.container_id,
            Err(e) => {
                let msg = e.message().to_string();
                self.ctx.events.warning(&self.pod, "Failed", &format!("Error: {msg}"));
                self.waiting.insert(c.name.clone(), ("CreateContainerError".into(), msg));
                self.ctx.images.lock().unwrap_or_else(|e| e.into_inner()).remove(c.image.as_deref().unwrap_or(""));
                return None;
            }
        };
        self.ctx.events.normal(&self.pod, "Created", &format!("Created container: {}", c.name));
        if let Err(e) = self.ctx.cri.start_container(cri::StartContainerRequest { container_id: id.clone() }).await {
            let msg = e.message().to_string();
            self.ctx.events.warning(&self.pod, "Failed", &format!("Error: {msg}"));
            self.waiting.insert(c.name.clone(), ("RunContainerError".into(), msg));
            self.backoff.started(&c.name);
            return None;
        }
        self.ctx.events.normal(&self.pod, "Started", &format!("Started container {}", c.name));
        self.waiting.remove(&c.name);
        if attempt > 0 {
            self.backoff.started(&c.name);
        }
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let timeout = Duration::from_secs(
                self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(1) as u64,
            );
            if let Err(msg) = run_hook(&hook, &self.ctx.cri, &id, c, ip, timeout).await {
                self.ctx.events.warning(&self.pod, "FailedPostStartHook", &msg);
                let _ = self.ctx.cri.stop_container(cri::StopContainerRequest { container_id: id, timeout: 0 }).await;
                return None;
            }
        }
        Some(id)
    }

    /// preStop, then SIGTERM with what is left of `grace`, then SIGKILL (the runtime's stop).
    async fn kill_container(&self, obs: &Observed, id: &str, name: &str, grace: i64) {
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        self.ctx.events.normal(&self.pod, "Killing", &format!("Stopping container {name}"));
        if let Some(c) = self.container_spec(name)
            && let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
            && grace > 0
        {
            let ip = if spec::host_network(&self.pod) {
                self.ctx.host_ip.clone()
            } else {
                obs.current_sandbox().map(|s| s.ip.clone()).unwrap_or_default()
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, run_hook(&hook, &self.ctx.cri, id, &c, &ip, left)).await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => self.ctx.events.warning(&self.pod, "FailedPreStopHook", &msg),
                Err(_) => self.ctx.events.warning(
                    &self.pod,
                    "FailedPreStopHook",
                    "PreStop hook did not finish within the grace period",
                ),
            }
        }
        // Upstream gives at least 2 s after preStop.
        let left = deadline.saturating_duration_since(Instant::now()).as_secs() as i64;
        let timeout = if grace == 0 { 0 } else { left.max(2) };
        if let Err(e) =
            self.ctx.cri.stop_container(cri::StopContainerRequest { container_id: id.to_string(), timeout }).await
        {
            tracing::warn!(pod = %self.key(), container = name, error = %e.message(), "stop failed");
        }
    }

    /// Stops every running container (in parallel, each with its own grace) and the sandboxes.
    async fn kill_everything(&mut self, obs: &Observed, grace: i64) {
        let running: Vec<ContainerObs> = obs.running().cloned().collect();
        // App containers first, then sidecars (upstream stops sidecars last).
        let init_names: HashSet<String> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let (sidecars, apps): (Vec<_>, Vec<_>) = running.into_iter().partition(|c| init_names.contains(&c.name));
        let this = &*self;
        futures::future::join_all(apps.iter().map(|c| this.kill_container(obs, &c.id, &c.name, grace))).await;
        futures::future::join_all(sidecars.iter().map(|c| this.kill_container(obs, &c.id, &c.name, grace.min(2))))
            .await;
        for s in obs.sandboxes.iter().filter(|s| s.ready) {
            if let Err(e) =
                self.ctx.cri.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: s.id.clone() }).await
            {
                tracing::warn!(pod = %self.key(), error = %e.message(), "StopPodSandbox failed");
            }
        }
        self.stop_probers(&HashSet::new());
    }

    /// Removes everything the pod left on the node.
    async fn cleanup(&mut self, obs: &Observed) {
        for s in &obs.sandboxes {
            if let Err(e) =
                self.ctx.cri.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: s.id.clone() }).await
            {
                tracing::warn!(pod = %self.key(), error = %e.message(), "RemovePodSandbox failed");
            }
        }
        for c in &obs.containers {
            let _ = self.ctx.cri.remove_container(cri::RemoveContainerRequest { container_id: c.id.clone() }).await;
        }
        volumes::teardown(&self.ctx.spec.root_dir, &uid(&self.pod));
        let logs = self.ctx.spec.pod_logs_dir.join(format!(
            "{}_{}_{}",
            self.pod.metadata.namespace.clone().unwrap_or_default(),
            self.pod.metadata.name.clone().unwrap_or_default(),
            uid(&self.pod)
        ));
        let _ = std::fs::remove_dir_all(logs);
    }

    /// Keeps the newest two instances of each container (for `logs --previous`) and drops
    /// sandboxes older than the current one.
    async fn remove_dead_instances(&self, obs: &Observed) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for c in &obs.containers {
            let n = seen.entry(c.name.as_str()).or_default();
            *n += 1;
            if *n > 2 && c.state == cri::ContainerState::ContainerExited {
                let _ = self.ctx.cri.remove_container(cri::RemoveContainerRequest { container_id: c.id.clone() }).await;
            }
        }
        if obs.current_sandbox().is_some_and(|s| s.ready) {
            for s in obs.sandboxes.iter().skip(1).filter(|s| !s.ready) {
                let _ = self
                    .ctx
                    .cri
                    .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: s.id.clone() })
                    .await;
            }
        }
    }

    async fn report(&mut self, obs: &Observed, backoff: &[(String, Duration)], pod_failed: bool) -> PodStatus {
        let (ready, started) = {
            let r = self.results.lock().unwrap_or_else(|e| e.into_inner());
            (r.ready.clone(), r.started.clone())
        };
        let input = StatusInput {
            pod: &self.pod,
            obs,
            ready: &ready,
            started: &started,
            waiting: &self.waiting,
            backoff,
            messages: &self.messages,
            pod_failed,
            host_ip: &self.ctx.host_ip,
            now: jiff::Timestamp::now(),
        };
        let status = generate_pod_status(&input);
        if self.last_status.as_ref() != Some(&status)
            || self.pod.status.as_ref().map(|s| s.phase.clone()) != Some(status.phase.clone())
        {
            match self.ctx.api.update_status(&self.pod, &status).await {
                Ok(()) => {
                    self.last_status = Some(status.clone());
                    if let Some(s) = self.pod.status.as_mut() {
                        s.phase = status.phase.clone();
                        s.start_time = status.start_time.clone();
                        s.conditions = status.conditions.clone();
                    } else {
                        self.pod.status = Some(status.clone());
                    }
                }
                Err(e) => tracing::warn!(pod = %self.key(), error = %e, "status update failed"),
            }
        }
        status
    }
}

fn has_volumes(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some_and(|v| !v.is_empty())
}
