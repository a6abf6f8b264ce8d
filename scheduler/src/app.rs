//! The scheduling loop: watch nodes, pods, PodDisruptionBudgets and namespaces into the cache
//! (`cache.rs`), keep pending pods of this scheduler's profiles in the queue (`queue.rs`), run a
//! cycle per pod (`cycle.rs`), and bind in the background: the pod is assumed on its node at
//! once, so the next cycle already counts it, and forgotten again if the binding fails. A pod
//! that fits nowhere may preempt (`preempt.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Event, EventSource, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use tokio::sync::{Semaphore, mpsc};

use crate::cache::Cache;
use crate::config::Config;
use crate::cycle::{Ctx, FitFailure, Nominated, find_node};
use crate::framework::PodInfo;
use crate::interpod::Namespaces;
use crate::preempt::{self, Victims};
use crate::queue::SchedulingQueue;

#[derive(Parser, Debug, Clone, Default)]
#[command(name = "scheduler", version, about = "Binds pending pods to the nodes that fit them best")]
pub struct Flags {
    /// A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1).
    #[arg(long, env = "SCHEDULER_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "SCHEDULER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The name of the single profile when there is no --config (default-scheduler).
    #[arg(long, env = "SCHEDULER_NAME")]
    pub scheduler_name: Option<String>,
    /// Leader election on a Lease, so a standby can take over (default true, as upstream).
    #[arg(long, env = "SCHEDULER_LEADER_ELECT", action = clap::ArgAction::Set)]
    pub leader_elect: Option<bool>,
    #[arg(long, value_parser = leader::parse_duration)]
    pub leader_elect_lease_duration: Option<Duration>,
    #[arg(long, value_parser = leader::parse_duration)]
    pub leader_elect_renew_deadline: Option<Duration>,
    #[arg(long, value_parser = leader::parse_duration)]
    pub leader_elect_retry_period: Option<Duration>,
    #[arg(long)]
    pub leader_elect_resource_namespace: Option<String>,
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
    /// Who this instance is in the Lease (default: hostname and a random suffix).
    #[arg(long, env = "SCHEDULER_IDENTITY")]
    pub identity: Option<String>,
}

impl Flags {
    /// The configuration file (if any) with the flags given on top.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
                Config::from_yaml(&text).map_err(|e| anyhow::anyhow!("--config {}: {e:#}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(k) = &self.kubeconfig {
            c.kubeconfig = Some(k.clone());
        }
        if let Some(name) = &self.scheduler_name {
            if self.config.is_some() {
                anyhow::bail!("--scheduler-name cannot be combined with --config (name the profiles in the file)");
            }
            c.profiles[0].scheduler_name = name.clone();
        }
        let l = &mut c.leader_election;
        if let Some(v) = self.leader_elect {
            l.leader_elect = v;
        }
        if let Some(v) = self.leader_elect_lease_duration {
            l.lease_duration = v;
        }
        if let Some(v) = self.leader_elect_renew_deadline {
            l.renew_deadline = v;
        }
        if let Some(v) = self.leader_elect_retry_period {
            l.retry_period = v;
        }
        if let Some(v) = &self.leader_elect_resource_namespace {
            l.resource_namespace = v.clone();
        }
        if let Some(v) = &self.leader_elect_resource_name {
            l.resource_name = v.clone();
        }
        Ok(c)
    }
}

fn pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.scheduling_gates.as_ref()).is_none_or(|g| g.is_empty())
        && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn scheduler_name(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler")
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn full_name(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""))
}

/// What a background binding reports back.
struct Bound {
    uid: String,
    result: Result<(), String>,
}

/// Concurrent bindings in flight.
const BINDERS: usize = 32;

pub struct Scheduler {
    client: kube::Client,
    config: Config,
    cache: Cache,
    /// Pending pods of our profiles.
    pending: HashMap<String, Pod>,
    queue: SchedulingQueue,
    nominated: Nominated,
    /// uid -> node it is nominated to.
    nominated_to: HashMap<String, String>,
    pdbs: BTreeMap<(String, String), PodDisruptionBudget>,
    namespaces: Namespaces,
    /// Where the next cycle starts filtering.
    start: usize,
    bound_tx: mpsc::UnboundedSender<Bound>,
    binders: Arc<Semaphore>,
}

impl Scheduler {
    fn new(client: kube::Client, config: Config, bound_tx: mpsc::UnboundedSender<Bound>) -> Self {
        Scheduler {
            client,
            queue: SchedulingQueue::new(config.initial_backoff, config.max_backoff),
            config,
            cache: Cache::default(),
            pending: HashMap::new(),
            nominated: Nominated::new(),
            nominated_to: HashMap::new(),
            pdbs: BTreeMap::new(),
            namespaces: HashMap::new(),
            start: 0,
            bound_tx,
            binders: Arc::new(Semaphore::new(BINDERS)),
        }
    }

    fn ours(&self, p: &Pod) -> bool {
        self.config.profile(scheduler_name(p)).is_some()
    }

    fn on_pod(&mut self, p: Pod) {
        let uid = uid(&p);
        if uid.is_empty() {
            return;
        }
        let was_placed = self.cache.placement(&uid).is_some();
        self.cache.observe_pod(&p);
        if pending(&p) && self.ours(&p) {
            self.set_nominated(&p);
            if !self.cache.is_assumed(&uid) {
                self.queue.add(&uid, p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0));
            }
            self.pending.insert(uid, p);
        } else {
            self.unnominate(&uid);
            self.pending.remove(&uid);
            self.queue.remove(&uid);
            if was_placed || self.cache.placement(&uid).is_some() {
                // A placed pod came, changed or finished: affinity and resources may differ.
                self.queue.something_changed();
            }
        }
    }

    fn on_pod_deleted(&mut self, p: &Pod) {
        let uid = uid(p);
        self.cache.remove_pod(&uid);
        self.pending.remove(&uid);
        self.queue.remove(&uid);
        self.unnominate(&uid);
        // Its resources are free again.
        self.queue.something_changed();
    }

    /// Pods nominated by preemption (ours or another instance's) hold their place.
    fn set_nominated(&mut self, p: &Pod) {
        let uid = uid(p);
        let node = p.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
        self.unnominate(&uid);
        if let Some(node) = node {
            self.nominated.entry(node.clone()).or_default().push(Arc::new(PodInfo::new(p.clone())));
            self.nominated_to.insert(uid, node);
        }
    }

    fn unnominate(&mut self, uid: &str) {
        if let Some(node) = self.nominated_to.remove(uid)
            && let Some(list) = self.nominated.get_mut(&node)
        {
            list.retain(|p| p.uid != uid);
            if list.is_empty() {
                self.nominated.remove(&node);
            }
        }
    }

    fn on_bound(&mut self, b: Bound) {
        if let Err(e) = b.result {
            self.cache.forget(&b.uid);
            if let Some(p) = self.pending.get(&b.uid) {
                tracing::warn!(pod = %full_name(p), error = %e, "binding failed; retrying after backoff");
                self.queue.backoff_retry(&b.uid, p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0), Instant::now());
            }
        }
    }

    fn schedule_next(&mut self) {
        let Some(uid) = self.queue.pop() else { return };
        let Some(pod) = self.pending.get(&uid).cloned() else { return };
        if self.cache.is_assumed(&uid) {
            return;
        }
        let Some(profile) = self.config.profile(scheduler_name(&pod)) else { return };
        let scheduler = profile.scheduler_name.clone();
        let info = Arc::new(PodInfo::new(pod.clone()));
        let ctx = Ctx {
            cache: &self.cache,
            profile,
            percentage: self.config.percentage_of_nodes_to_score,
            nominated: &self.nominated,
            namespaces: &self.namespaces,
        };
        let outcome = find_node(&ctx, &info, &mut self.start).map_err(|failure| {
            let mut message = failure.message.clone();
            let mut victims = None;
            if profile.preemption && preempt::eligible(&info, &ctx) {
                let pdbs: Vec<&PodDisruptionBudget> = self.pdbs.values().collect();
                victims = preempt::select(&ctx, &info, &failure, &pdbs);
                if victims.is_none() {
                    message.push_str(&preemption_failed(&failure, ctx.cache.node_count()));
                }
            }
            (message, victims)
        });
        match outcome {
            Ok(node) => {
                self.cache.assume(info, &node);
                self.unnominate(&uid);
                self.bind(pod, node, scheduler);
            }
            Err((message, victims)) => {
                self.queue.unschedulable(&uid, info.priority, Instant::now());
                if let Some(v) = victims {
                    self.preempt(&pod, &info, v, &scheduler);
                }
                self.unschedulable(&pod, message, scheduler);
            }
        }
    }

    fn bind(&self, pod: Pod, node: String, scheduler: String) {
        let client = self.client.clone();
        let tx = self.bound_tx.clone();
        let binders = self.binders.clone();
        let uid = uid(&pod);
        tokio::spawn(async move {
            let _permit = binders.acquire().await;
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let result = api
                .create_subresource::<Binding, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            if result.is_ok() {
                let msg = format!("Successfully assigned {ns}/{name} to {node}");
                event(&client, &scheduler, &pod, "Normal", "Scheduled", &msg).await;
            }
            let _ = tx.send(Bound { uid, result });
        });
    }

    /// FailedScheduling and PodScheduled=False, in the background.
    fn unschedulable(&self, pod: &Pod, message: String, scheduler: String) {
        let client = self.client.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            event(&client, &scheduler, &pod, "Warning", "FailedScheduling", &message).await;
            let already = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(&message))
            });
            if already {
                return;
            }
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastTransitionTime": Time(jiff::Timestamp::now()),
            }]}});
            let api: Api<Pod> = Api::namespaced(client, pod.metadata.namespace.as_deref().unwrap_or(""));
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                tracing::debug!(error = %e, "could not set PodScheduled=False");
            }
        });
    }

    /// Nominates the pod to the node and evicts the victims: each first gets the
    /// DisruptionTarget condition, then is deleted with its grace period. Lower-priority pods
    /// nominated to the same node lose their nomination.
    fn preempt(&mut self, pod: &Pod, info: &Arc<PodInfo>, v: Victims, scheduler: &str) {
        tracing::info!(pod = %full_name(pod), node = %v.node, victims = v.pods.len(), "preempting");
        let displaced: Vec<Pod> = self
            .nominated
            .get(&v.node)
            .into_iter()
            .flatten()
            .filter(|p| p.priority < info.priority)
            .map(|p| p.pod.clone())
            .collect();
        for p in &displaced {
            self.unnominate(&uid(p));
        }
        let uid = uid(pod);
        self.unnominate(&uid);
        self.nominated.entry(v.node.clone()).or_default().push(info.clone());
        self.nominated_to.insert(uid.clone(), v.node.clone());
        let client = self.client.clone();
        let pod = pod.clone();
        let scheduler = scheduler.to_string();
        tokio::spawn(async move {
            let status = |node: Option<&str>| serde_json::json!({"status": {"nominatedNodeName": node}});
            let api = |p: &Pod| -> Api<Pod> {
                Api::namespaced(client.clone(), p.metadata.namespace.as_deref().unwrap_or(""))
            };
            let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
            if let Err(e) =
                api(&pod).patch_status(&name(&pod), &PatchParams::default(), &Patch::Merge(status(Some(&v.node)))).await
            {
                tracing::warn!(error = %e, "could not set nominatedNodeName");
            }
            for victim in &v.pods {
                let victim = &victim.pod;
                let condition = serde_json::json!({"status": {"conditions": [{
                    "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                    "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": Time(jiff::Timestamp::now()),
                }]}});
                if let Err(e) = api(victim)
                    .patch_status(&name(victim), &PatchParams::default(), &Patch::Strategic(&condition))
                    .await
                {
                    tracing::debug!(error = %e, "could not set DisruptionTarget");
                }
                let msg = format!("Preempted by pod {uid} on node {}", v.node);
                event(&client, &scheduler, victim, "Normal", "Preempted", &msg).await;
                if let Err(e) = api(victim).delete(&name(victim), &DeleteParams::default()).await {
                    tracing::warn!(pod = %full_name(victim), error = %e, "could not delete a preemption victim");
                }
            }
            for p in displaced {
                let _ = api(&p).patch_status(&name(&p), &PatchParams::default(), &Patch::Merge(status(None))).await;
            }
        });
    }
}

/// Upstream appends what preemption found when it could not help.
fn preemption_failed(f: &FitFailure, total: usize) -> String {
    let hopeless = f.misfits.values().filter(|m| !m.resolvable).count();
    let mut parts = Vec::new();
    if total > hopeless {
        parts.push(format!("{} No preemption victims found for incoming pod", total - hopeless));
    }
    if hopeless > 0 {
        parts.push(format!("{hopeless} Preemption is not helpful for scheduling"));
    }
    format!(" preemption: 0/{total} nodes are available: {}.", parts.join(", "))
}

async fn event(client: &kube::Client, scheduler: &str, pod: &Pod, type_: &str, reason: &str, message: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.metadata.name.clone().unwrap_or_default(), now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource { component: Some(scheduler.to_string()), host: None }),
        reporting_component: Some(scheduler.to_string()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let _ = api.create(&PostParams::default(), &ev).await;
}

pub async fn client_for(config: &Config) -> anyhow::Result<kube::Client> {
    let Some(kubeconfig) = config.kubeconfig.clone() else {
        anyhow::bail!("--kubeconfig (or clientConnection.kubeconfig in --config) is required");
    };
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", kubeconfig.display()))?;
    let c = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", kubeconfig.display()))?;
    Ok(kube::Client::try_from(c)?)
}

pub async fn run(flags: Flags, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let config = flags.resolve()?;
    let client = client_for(&config).await?;
    let l = &config.leader_election;
    if !l.leader_elect {
        return schedule(client, config, shutdown).await;
    }
    let identity = flags.identity.clone().unwrap_or_else(leader::default_identity);
    let mut lc = leader::Config::new(l.resource_namespace.clone(), l.resource_name.clone(), identity.clone());
    lc.lease_duration = l.lease_duration;
    lc.renew_deadline = l.renew_deadline;
    lc.retry_period = l.retry_period;
    let lease = format!("{}/{}", l.resource_namespace, l.resource_name);
    let mut elector = leader::LeaderElector::new(client.clone(), lc)?;
    tokio::pin!(shutdown);
    tracing::info!(%identity, %lease, "waiting to lead");
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        _ = elector.acquire() => {}
    }
    tracing::info!(%identity, %lease, "leading");
    // Losing the lease ends the process, as upstream: a restart starts clean as a standby.
    tokio::select! {
        lost = elector.hold() => Err(anyhow::anyhow!("lost the lease {lease}: {lost}")),
        r = schedule(client, config, &mut shutdown) => r,
    }
}

/// Watches and schedules until `shutdown`.
pub async fn schedule(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (bound_tx, mut bound_rx) = mpsc::unbounded_channel();
    let names: Vec<String> = config.profiles.iter().map(|p| p.scheduler_name.clone()).collect();
    let mut s = Scheduler::new(client.clone(), config, bound_tx);
    let cfg = watcher::Config::default;
    let mut nodes = watcher::watcher(Api::<Node>::all(client.clone()), cfg()).boxed();
    let mut pods = watcher::watcher(Api::<Pod>::all(client.clone()), cfg()).boxed();
    let mut pdbs = watcher::watcher(Api::<PodDisruptionBudget>::all(client.clone()), cfg()).boxed();
    let mut namespaces = watcher::watcher(Api::<Namespace>::all(client), cfg()).boxed();
    let (mut nodes_synced, mut pods_synced) = (false, false);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tokio::pin!(shutdown);
    tracing::info!(profiles = ?names, "scheduling");
    let watch_failed = |what: &str, e: watcher::Error| {
        tracing::warn!(error = %e, "{what} watch failed; retrying");
    };
    loop {
        // Drain what is ready before scheduling, so decisions see fresh state.
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            e = nodes.next() => match e {
                Some(Ok(WatchEvent::Apply(n) | WatchEvent::InitApply(n))) => {
                    s.cache.set_node(n);
                    s.queue.something_changed();
                }
                Some(Ok(WatchEvent::Delete(n))) => s.cache.remove_node(n.metadata.name.as_deref().unwrap_or("")),
                Some(Ok(WatchEvent::InitDone)) => nodes_synced = true,
                Some(Ok(WatchEvent::Init)) => {}
                Some(Err(e)) => { watch_failed("node", e); tokio::time::sleep(Duration::from_secs(1)).await; }
                None => return Ok(()),
            },
            e = pods.next() => match e {
                Some(Ok(WatchEvent::Apply(p) | WatchEvent::InitApply(p))) => s.on_pod(p),
                Some(Ok(WatchEvent::Delete(p))) => s.on_pod_deleted(&p),
                Some(Ok(WatchEvent::InitDone)) => pods_synced = true,
                Some(Ok(WatchEvent::Init)) => {}
                Some(Err(e)) => { watch_failed("pod", e); tokio::time::sleep(Duration::from_secs(1)).await; }
                None => return Ok(()),
            },
            e = pdbs.next() => match e {
                Some(Ok(WatchEvent::Apply(b) | WatchEvent::InitApply(b))) => {
                    let k = (b.metadata.namespace.clone().unwrap_or_default(), b.metadata.name.clone().unwrap_or_default());
                    s.pdbs.insert(k, b);
                }
                Some(Ok(WatchEvent::Delete(b))) => {
                    let k = (b.metadata.namespace.clone().unwrap_or_default(), b.metadata.name.clone().unwrap_or_default());
                    s.pdbs.remove(&k);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => { watch_failed("PodDisruptionBudget", e); tokio::time::sleep(Duration::from_secs(1)).await; }
                None => return Ok(()),
            },
            e = namespaces.next() => match e {
                Some(Ok(WatchEvent::Apply(n) | WatchEvent::InitApply(n))) => {
                    s.namespaces.insert(n.metadata.name.clone().unwrap_or_default(), n.metadata.labels.unwrap_or_default());
                }
                Some(Ok(WatchEvent::Delete(n))) => { s.namespaces.remove(n.metadata.name.as_deref().unwrap_or("")); }
                Some(Ok(_)) => {}
                Some(Err(e)) => { watch_failed("namespace", e); tokio::time::sleep(Duration::from_secs(1)).await; }
                None => return Ok(()),
            },
            Some(b) = bound_rx.recv() => s.on_bound(b),
            _ = async {}, if nodes_synced && pods_synced && !s.queue.is_empty() => s.schedule_next(),
            _ = tick.tick() => s.queue.flush(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unbound_live_ungated_pods_are_pending() {
        let pod = |extra: serde_json::Value| -> Pod {
            let mut p = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
            if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
                for (k, v) in extra {
                    p.insert(k.clone(), v.clone());
                }
            }
            serde_json::from_value(p).expect("pod")
        };
        assert!(pending(&pod(serde_json::json!({}))));
        assert!(!pending(&pod(serde_json::json!({"spec": {"nodeName": "n", "containers": [{"name": "c"}]}}))));
        assert!(!pending(&pod(
            serde_json::json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
        )));
        assert!(!pending(&pod(serde_json::json!({"status": {"phase": "Failed"}}))));
        let gated = serde_json::json!({"spec": {"schedulingGates": [{"name": "wait"}], "containers": [{"name": "c"}]}});
        assert!(!pending(&pod(gated)), "a gated pod waits for its gates to be removed");
        assert!(pending(&pod(serde_json::json!({"spec": {"schedulingGates": [], "containers": [{"name": "c"}]}}))));
    }

    #[test]
    fn flags_go_on_top_of_the_configuration_file() {
        let dir = std::env::temp_dir().join(format!("sched-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("config.yaml");
        std::fs::write(
            &file,
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection: {kubeconfig: /from/file}\nleaderElection: {leaderElect: true, leaseDuration: 30s}\n\
             profiles: [{schedulerName: a}, {schedulerName: b}]\n",
        )
        .expect("write");
        let flags = Flags {
            config: Some(file.clone()),
            leader_elect: Some(false),
            leader_elect_resource_name: Some("other".into()),
            ..Default::default()
        };
        let c = flags.resolve().expect("resolves");
        assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/from/file")));
        assert!(!c.leader_election.leader_elect, "the flag wins");
        assert_eq!(c.leader_election.lease_duration, Duration::from_secs(30), "the file's value stays");
        assert_eq!(c.leader_election.resource_name, "other");
        assert_eq!(c.profiles.iter().map(|p| p.scheduler_name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let both = Flags { config: Some(file), scheduler_name: Some("x".into()), ..Default::default() };
        assert!(format!("{:#}", both.resolve().expect_err("conflict")).contains("--scheduler-name"));
        let missing = Flags { config: Some(dir.join("nope.yaml")), ..Default::default() };
        assert!(format!("{:#}", missing.resolve().expect_err("missing")).contains("nope.yaml"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
