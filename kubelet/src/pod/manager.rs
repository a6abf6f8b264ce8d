//! The pod manager: turns the watch of this node's pods into one worker per pod UID, and
//! removes what the runtime holds for pods that no longer exist (orphans left while the kubelet
//! was down, or after a forced delete).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use proto::cri;
use tokio::sync::mpsc;

use super::admission::{self, HostPort};
use super::spec::LABEL_POD_UID;
use super::worker::{NodeContext, PodWorker, Update};

/// What the pod source reports.
#[derive(Debug)]
pub enum PodEvent {
    Apply(Box<Pod>),
    Delete(Box<Pod>),
    /// The initial list is complete: every pod that exists has been applied.
    Synced,
}

/// Watches `spec.nodeName=<node>` on the apiserver, as [`PodEvent`]s.
pub fn watch_pods(client: kube::Client, node: &str) -> impl Stream<Item = PodEvent> + Send + 'static {
    use kube::runtime::watcher::{self, Event};
    let api: kube::Api<Pod> = kube::Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    watcher::watcher(api, cfg).filter_map(|e| async move {
        match e {
            Ok(Event::Apply(p) | Event::InitApply(p)) => Some(PodEvent::Apply(Box::new(p))),
            Ok(Event::Delete(p)) => Some(PodEvent::Delete(Box::new(p))),
            Ok(Event::InitDone) => Some(PodEvent::Synced),
            Ok(Event::Init) => None,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        }
    })
}

pub struct PodManager {
    ctx: Arc<NodeContext>,
    workers: HashMap<String, mpsc::UnboundedSender<Update>>,
    /// Pods that exist in the API, by UID.
    known: HashSet<String>,
    /// Pods whose worker finished (terminated and removed): later echoes are ignored.
    finished: HashSet<String>,
    synced: bool,
    /// Pod UIDs the runtime held when the manager started (None until listed).
    in_runtime: Option<HashSet<String>>,
    /// The host ports of admitted pods that have not finished, by UID.
    held: HashMap<String, Vec<HostPort>>,
    /// New pods seen in the initial list that want host ports: admitted once the list is
    /// complete, oldest first, so that pods already running claim their ports before them.
    deferred: Vec<Pod>,
}

impl PodManager {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        PodManager {
            ctx,
            workers: HashMap::new(),
            known: HashSet::new(),
            finished: HashSet::new(),
            synced: false,
            in_runtime: None,
            held: HashMap::new(),
            deferred: Vec::new(),
        }
    }

    /// Runs until `events` ends or `shutdown` resolves. Workers are left running on shutdown
    /// only as long as the runtime lives: containers are never stopped by a kubelet exit.
    pub async fn run(mut self, events: impl Stream<Item = PodEvent>, shutdown: impl Future<Output = ()>) {
        // What the runtime holds now: pods not in it, seen later, need no first look.
        if let Ok(list) = self.ctx.cri.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await {
            self.in_runtime = Some(list.items.iter().filter_map(|s| s.labels.get(LABEL_POD_UID).cloned()).collect());
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(20));
        tokio::pin!(events);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(PodEvent::Apply(p)) => self.apply(*p, &done_tx),
                    Some(PodEvent::Delete(p)) => {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        self.known.remove(&uid);
                        self.finished.remove(&uid);
                        self.held.remove(&uid);
                        self.deferred.retain(|d| d.metadata.uid.as_ref() != Some(&uid));
                        if let Some(tx) = self.workers.get(&uid) {
                            let _ = tx.send(Update::Deleted);
                        }
                    }
                    Some(PodEvent::Synced) => {
                        self.synced = true;
                        let mut deferred = std::mem::take(&mut self.deferred);
                        deferred.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
                        for p in deferred {
                            self.apply(p, &done_tx);
                        }
                        self.housekeeping().await;
                    }
                    None => break,
                },
                Some(uid) = done_rx.recv() => {
                    self.workers.remove(&uid);
                    self.held.remove(&uid);
                    if self.known.contains(&uid) {
                        self.finished.insert(uid);
                    }
                }
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = &mut shutdown => break,
            }
        }
    }

    fn apply(&mut self, pod: Pod, done_tx: &mpsc::UnboundedSender<String>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return;
        }
        self.known.insert(uid.clone());
        if self.finished.contains(&uid) {
            return;
        }
        if admission::terminal(&pod) {
            self.held.remove(&uid);
        }
        if let Some(tx) = self.workers.get(&uid)
            && tx.send(Update::Pod(Box::new(pod.clone()))).is_ok()
        {
            return;
        }
        let wanted = admission::host_ports(&pod);
        let check = admission::needs_admission(&pod) && !wanted.is_empty();
        if check && !self.synced {
            self.deferred.retain(|d| d.metadata.uid.as_ref() != Some(&uid));
            self.deferred.push(pod);
            return;
        }
        let rejection = if check { admission::admit(&wanted, self.held.values().flatten()).err() } else { None };
        if rejection.is_none() && !admission::terminal(&pod) {
            self.held.insert(uid.clone(), wanted);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut worker = PodWorker::new(self.ctx.clone(), pod);
        if let Some(r) = rejection {
            worker = worker.rejected(r);
        }
        if self.in_runtime.as_ref().is_some_and(|r| !r.contains(&uid)) {
            worker = worker.fresh();
        }
        let done = done_tx.clone();
        let u = uid.clone();
        tokio::spawn(async move {
            worker.run(rx).await;
            let _ = done.send(u);
        });
        self.workers.insert(uid, tx);
    }

    /// Removes sandboxes (and their containers) of pods that are neither known nor handled.
    async fn housekeeping(&mut self) {
        if !self.synced {
            return;
        }
        let Ok(list) = self.ctx.cri.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await else { return };
        for s in list.items {
            let uid = s.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
            if self.known.contains(&uid) || self.workers.contains_key(&uid) {
                continue;
            }
            tracing::info!(sandbox = %s.id, pod_uid = %uid, "removing the sandbox of a pod that no longer exists");
            let _ = self.ctx.cri.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
            let _ =
                self.ctx.cri.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
            if !uid.is_empty() {
                super::volumes::teardown(&self.ctx.spec.root_dir, &uid);
            }
        }
    }
}
