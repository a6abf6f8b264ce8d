//! The scheduling loop: watch nodes and pods, keep pending pods of this scheduler in the queue
//! (`queue.rs`), filter and score nodes, bind through `pods/binding`, and remember each binding
//! as assumed until the watch shows it, so a burst never overcommits a node.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};

use crate::framework::NodeInfo;
use crate::plugins::{filter, fit_error, score};
use crate::queue::SchedulingQueue;

#[derive(Parser, Debug, Clone)]
#[command(name = "scheduler", version, about = "Binds pending pods to the nodes that fit them best")]
pub struct Flags {
    #[arg(long, env = "SCHEDULER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Pods whose spec.schedulerName is this are ours.
    #[arg(long, env = "SCHEDULER_NAME", default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Leader election on a Lease (not built yet: only `false` is accepted).
    #[arg(long, env = "SCHEDULER_LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn pending_for(p: &Pod, scheduler: &str) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
        && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler") == scheduler
        && p.metadata.deletion_timestamp.is_none()
        && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn key(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

pub struct Scheduler {
    client: kube::Client,
    name: String,
    nodes: BTreeMap<String, Node>,
    pods: HashMap<String, Pod>,
    /// uid -> node, bound by us but not yet seen bound.
    assumed: HashMap<String, String>,
    queue: SchedulingQueue,
}

impl Scheduler {
    pub fn new(client: kube::Client, name: &str) -> Self {
        Scheduler {
            client,
            name: name.to_string(),
            nodes: BTreeMap::new(),
            pods: HashMap::new(),
            assumed: HashMap::new(),
            queue: SchedulingQueue::default(),
        }
    }

    fn on_pod(&mut self, p: Pod) {
        let uid = key(&p);
        if uid.is_empty() {
            return;
        }
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        if bound {
            self.assumed.remove(&uid);
        }
        if pending_for(&p, &self.name) {
            if !self.assumed.contains_key(&uid) {
                self.queue.add(&uid, priority(&p));
            }
        } else {
            self.queue.remove(&uid);
        }
        self.pods.insert(uid, p);
    }

    fn on_pod_deleted(&mut self, p: &Pod) {
        let uid = key(p);
        self.pods.remove(&uid);
        self.assumed.remove(&uid);
        self.queue.remove(&uid);
        // Its resources are free again.
        self.queue.something_changed();
    }

    fn node_infos(&self) -> Vec<NodeInfo> {
        let mut infos: BTreeMap<String, NodeInfo> =
            self.nodes.iter().map(|(n, node)| (n.clone(), NodeInfo::new(node.clone()))).collect();
        for (uid, p) in &self.pods {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| self.assumed.get(uid).cloned());
            let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
            if let Some(n) = node
                && !finished
                && let Some(info) = infos.get_mut(&n)
            {
                info.add_pod(p);
            }
        }
        infos.into_values().collect()
    }

    /// Picks a node for `pod`, or the fit error.
    pub fn schedule(&self, pod: &Pod) -> Result<String, String> {
        let infos = self.node_infos();
        if infos.is_empty() {
            return Err("0/0 nodes are available: no nodes available to schedule pods.".into());
        }
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Vec<(i64, String)> = Vec::new();
        // Topology spread counts pods on the nodes the pod could go to by selector and affinity.
        let eligible: Vec<&NodeInfo> = infos.iter().filter(|n| crate::plugins::node_affinity(pod, n).is_ok()).collect();
        for n in &infos {
            let verdict = filter(pod, n)
                .and_then(|()| crate::interpod::inter_pod_affinity(pod, n, &infos).map_err(|r| vec![r]))
                .and_then(|()| crate::interpod::pod_topology_spread(pod, n, &eligible).map_err(|r| vec![r]));
            match verdict {
                Ok(()) => best.push((score(pod, n), n.name().to_string())),
                Err(rs) => {
                    for r in rs {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
            }
        }
        let Some(top) = best.iter().map(|(s, _)| *s).max() else {
            return Err(fit_error(infos.len(), &reasons));
        };
        let ties: Vec<&String> = best.iter().filter(|(s, _)| *s == top).map(|(_, n)| n).collect();
        use rand::Rng;
        let pick = ties[rand::rng().random_range(0..ties.len())];
        Ok(pick.clone())
    }

    async fn schedule_next(&mut self) {
        let Some(uid) = self.queue.pop() else { return };
        let Some(pod) = self.pods.get(&uid).cloned() else { return };
        if !pending_for(&pod, &self.name) {
            return;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.schedule(&pod) {
            Ok(node) => {
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
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .create_subresource::<Binding, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                {
                    Ok(_) => {
                        self.assumed.insert(uid, node.clone());
                        self.event(
                            &pod,
                            "Normal",
                            "Scheduled",
                            &format!("Successfully assigned {ns}/{name} to {node}"),
                        );
                    }
                    Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
                }
            }
            Err(msg) => {
                self.queue.unschedulable(&uid, priority(&pod), Instant::now());
                self.event(&pod, "Warning", "FailedScheduling", &msg);
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
                    "lastTransitionTime": Time(jiff::Timestamp::now()),
                }]}});
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                    tracing::debug!(error = %e, "could not set PodScheduled=False");
                }
            }
        }
    }

    fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
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
            source: Some(EventSource { component: Some(self.name.clone()), host: None }),
            reporting_component: Some(self.name.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            let _ = api.create(&PostParams::default(), &ev).await;
        });
    }
}

pub async fn run(flags: Flags, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    if flags.leader_elect {
        anyhow::bail!("--leader-elect=true is not supported yet (run one scheduler with --leader-elect=false)");
    }
    let Some(kubeconfig) = flags.kubeconfig.clone() else {
        anyhow::bail!("--kubeconfig is required");
    };
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("--kubeconfig: {e}"))?;
    let client = kube::Client::try_from(config)?;
    let mut s = Scheduler::new(client.clone(), &flags.scheduler_name);
    let mut nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).boxed();
    let mut pods = watcher::watcher(Api::<Pod>::all(client), watcher::Config::default()).boxed();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tokio::pin!(shutdown);
    tracing::info!(name = %flags.scheduler_name, "scheduling");
    loop {
        // Drain what is ready before scheduling, so decisions see fresh state.
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            e = nodes.next() => match e {
                Some(Ok(WatchEvent::Apply(n) | WatchEvent::InitApply(n))) => {
                    s.nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    s.queue.something_changed();
                }
                Some(Ok(WatchEvent::Delete(n))) => {
                    s.nodes.remove(n.metadata.name.as_deref().unwrap_or(""));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return Ok(()),
            },
            e = pods.next() => match e {
                Some(Ok(WatchEvent::Apply(p) | WatchEvent::InitApply(p))) => s.on_pod(p),
                Some(Ok(WatchEvent::Delete(p))) => s.on_pod_deleted(&p),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return Ok(()),
            },
            _ = async {}, if !s.queue.is_empty() => s.schedule_next().await,
            _ = tick.tick() => s.queue.flush(Instant::now()),
        }
    }
}
