//! The process: flags, leader election, the shared informers, and the controllers chosen with
//! `--controllers`, each draining its work queue with `--concurrent-<x>-syncs` workers.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ReplicationController, Secret, ServiceAccount};
use kube::api::Api;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cronjob::CronJobController;
use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::disruption::DisruptionController;
use crate::endpoints::{EndpointSliceController, EndpointSliceMirroringController, EndpointsController};
use crate::events::Recorder;
use crate::garbagecollector::GarbageCollector;
use crate::informer::Informer;
use crate::job::JobController;
use crate::job::ttl::TtlAfterFinishedController;
use crate::namespace::NamespaceController;
use crate::nodeipam::{Blocks, NodeIpamController};
use crate::nodelifecycle::NodeLifecycleController;
use crate::replicaset::ReplicaSetController;
use crate::serviceaccount::{RootCaPublisher, ServiceAccountController, root_ca};
use crate::servicelb::{Pool, ServiceLbController};
use crate::statefulset::StatefulSetController;
use crate::volume::VolumeBinder;
use crate::workqueue::WorkQueue;

#[derive(Parser, Debug, Clone)]
#[command(name = "controller-manager", version, about = "Runs the control loops that keep desired state")]
pub struct Flags {
    #[arg(long, env = "CONTROLLER_MANAGER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: '*' for all on by default, 'foo' to add one, '-foo' to leave one out
    /// (upstream's names, with or without the '-controller' suffix).
    #[arg(long, env = "CONTROLLER_MANAGER_CONTROLLERS", default_value = "*", value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Leader election on a Lease, so a standby can take over (default true, as upstream).
    #[arg(long, env = "CONTROLLER_MANAGER_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, default_value = "15s", value_parser = leader::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = leader::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = leader::parse_duration)]
    pub leader_elect_retry_period: Duration,
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    #[arg(long, default_value = "kube-controller-manager")]
    pub leader_elect_resource_name: String,
    /// Who this instance is in the Lease (default: hostname and a random suffix).
    #[arg(long, env = "CONTROLLER_MANAGER_IDENTITY")]
    pub identity: Option<String>,
    /// Workers syncing ReplicaSets at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    /// Workers syncing ReplicationControllers at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_rc_syncs: usize,
    /// Workers syncing Deployments at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    /// Workers syncing PodDisruptionBudgets' status at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_disruption_syncs: usize,
    /// Finished pods kept before the oldest are deleted (0: never).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// Workers syncing DaemonSets at once.
    #[arg(long, env = "CONTROLLER_MANAGER_CONCURRENT_DAEMONSET_SYNCS", default_value_t = 2)]
    pub concurrent_daemonset_syncs: usize,
    /// Workers syncing StatefulSets at once.
    #[arg(long, env = "CONTROLLER_MANAGER_CONCURRENT_STATEFULSET_SYNCS", default_value_t = 5)]
    pub concurrent_statefulset_syncs: usize,
    /// How often every HorizontalPodAutoscaler is re-evaluated: shorter reacts to load sooner,
    /// at the cost of more metrics reads.
    #[arg(long, env = "CONTROLLER_MANAGER_HORIZONTAL_POD_AUTOSCALER_SYNC_PERIOD", default_value = "15s", value_parser = leader::parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How long a HorizontalPodAutoscaler waits, after the highest recent recommendation, before
    /// scaling down (unless its `spec.behavior.scaleDown` sets a window): longer rides out dips in
    /// load without churning pods, shorter gives resources back sooner.
    #[arg(long, env = "CONTROLLER_MANAGER_HORIZONTAL_POD_AUTOSCALER_DOWNSCALE_STABILIZATION", default_value = "5m", value_parser = leader::parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// Workers syncing HorizontalPodAutoscalers at once.
    #[arg(long, env = "CONTROLLER_MANAGER_CONCURRENT_HORIZONTAL_POD_AUTOSCALER_SYNCS", default_value_t = 5)]
    pub concurrent_horizontal_pod_autoscaler_syncs: usize,
    /// Workers syncing Jobs at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: usize,
    /// Workers syncing CronJobs at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_cronjob_syncs: usize,
    /// Workers deleting finished Jobs after ttlSecondsAfterFinished.
    #[arg(long, default_value_t = 5)]
    pub concurrent_ttl_after_finished_syncs: usize,
    /// Workers syncing Services' Endpoints at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,
    /// Workers syncing Services' EndpointSlices at once.
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,
    /// Workers mirroring hand-written Endpoints into EndpointSlices.
    #[arg(long, default_value_t = 5)]
    pub mirroring_concurrent_service_endpoint_syncs: usize,
    /// Endpoints per EndpointSlice (upstream's default 100, at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,
    /// Make hostPath volumes for claims of a class whose provisioner is
    /// `kubernetes.io/host-path` (single-node and test clusters only, as upstream says).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_hostpath_provisioner: bool,
    /// Where provisioned hostPath volumes are made.
    #[arg(long, default_value = crate::volume::DEFAULT_HOSTPATH_DIR)]
    pub hostpath_provisioner_dir: PathBuf,
    /// Addresses the built-in load-balancer controller hands to LoadBalancer Services (a CIDR);
    /// without it they get the Ready nodes' InternalIPs, as k3s's ServiceLB does.
    #[arg(long)]
    pub load_balancer_ip_pool: Option<String>,
    /// Hand each node a pod CIDR from --cluster-cidr (node IPAM).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allocate_node_cidrs: bool,
    /// The pod network the node CIDRs are cut from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// How long a node may go without renewing its Lease before it is marked Unknown.
    #[arg(long, default_value = "50s", value_parser = leader::parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = leader::parse_duration)]
    pub node_monitor_period: Duration,
    /// Workers of the garbage collector.
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    /// The CA bundle published as the kube-root-ca.crt ConfigMap in every namespace (default:
    /// the kubeconfig's cluster CA).
    #[arg(long, env = "CONTROLLER_MANAGER_ROOT_CA_FILE")]
    pub root_ca_file: Option<PathBuf>,
    /// Workers emptying namespaces being deleted.
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    /// The key (PKCS#8 PEM, ECDSA P-256: the apiserver's `sa.key`) that signs the tokens put into
    /// `kubernetes.io/service-account-token` Secrets. Without it the serviceaccount-token
    /// controller does not run, and such Secrets stay empty.
    #[arg(long, env = "CONTROLLER_MANAGER_SERVICE_ACCOUNT_PRIVATE_KEY_FILE")]
    pub service_account_private_key_file: Option<PathBuf>,
    /// Workers filling and cleaning up ServiceAccount token Secrets.
    #[arg(long, default_value_t = 5)]
    pub concurrent_serviceaccount_token_syncs: usize,
}

impl Default for Flags {
    /// Every flag at its default.
    fn default() -> Self {
        Flags::parse_from(["controller-manager"])
    }
}

/// A flag or configuration that cannot work; the process says so in one line and exits 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Upstream's controllers by name. Those not in [`IMPLEMENTED`] are not run yet; the log says so.
pub const UPSTREAM: &[&str] = &[
    "attachdetach",
    "bootstrapsigner",
    "clusterrole-aggregation",
    "cronjob",
    "csrapproving",
    "csrcleaner",
    "csrsigning",
    "daemonset",
    "deployment",
    "disruption",
    "endpoint",
    "endpointslice",
    "endpointslicemirroring",
    "ephemeral-volume",
    "garbagecollector",
    "horizontalpodautoscaling",
    "job",
    "namespace",
    "nodeipam",
    "nodelifecycle",
    "persistentvolume-binder",
    "persistentvolume-expander",
    "podgc",
    "pv-protection",
    "pvc-protection",
    "replicaset",
    "replicationcontroller",
    "resourcequota",
    "root-ca-cert-publisher",
    "serviceaccount",
    "serviceaccount-token",
    "service-lb-controller",
    "statefulset",
    "tokencleaner",
    "ttl",
    "ttl-after-finished",
];

/// Off unless named, as upstream.
const OFF_BY_DEFAULT: &[&str] = &["bootstrapsigner", "tokencleaner"];

pub const IMPLEMENTED: &[&str] = &[
    "cronjob",
    "daemonset",
    "deployment",
    "disruption",
    "endpoint",
    "endpointslice",
    "endpointslicemirroring",
    "garbagecollector",
    "horizontalpodautoscaling",
    "job",
    "namespace",
    "nodeipam",
    "nodelifecycle",
    "persistentvolume-binder",
    "podgc",
    "replicaset",
    "replicationcontroller",
    "root-ca-cert-publisher",
    "serviceaccount",
    "serviceaccount-token",
    "service-lb-controller",
    "statefulset",
    "ttl-after-finished",
];

/// The controllers `--controllers` turns on, or why the list is wrong.
pub fn enabled(list: &[String]) -> Result<BTreeSet<&'static str>, String> {
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    let mut star = false;
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if item == "*" {
            star = true;
            continue;
        }
        let (negated, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, item),
        };
        let name = name.strip_suffix("-controller").unwrap_or(name);
        let Some(known) = UPSTREAM.iter().find(|k| **k == name) else {
            return Err(format!("--controllers: unknown controller {item:?}"));
        };
        if negated {
            off.insert(*known)
        } else {
            on.insert(*known)
        };
    }
    if star {
        on.extend(UPSTREAM.iter().filter(|n| !OFF_BY_DEFAULT.contains(n)));
    }
    Ok(on.difference(&off).copied().collect())
}

pub async fn client_for(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let Some(path) = kubeconfig else { return Err(ConfigError("--kubeconfig is required".into()).into()) };
    let kc =
        kube::config::Kubeconfig::read_from(path).map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    let c = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    Ok(kube::Client::try_from(c)?)
}

pub async fn run(flags: Flags, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let controllers = enabled(&flags.controllers).map_err(ConfigError)?;
    if flags.allocate_node_cidrs {
        Blocks::parse(&flags.cluster_cidr, flags.node_cidr_mask_size).map_err(ConfigError)?;
    }
    if let Some(pool) = &flags.load_balancer_ip_pool {
        Pool::parse(pool).map_err(ConfigError)?;
    }
    if let (true, Some(key)) = (controllers.contains("serviceaccount-token"), &flags.service_account_private_key_file) {
        crate::tokens::TokenSigner::load(key).map_err(|e| ConfigError(e.to_string()))?;
    }
    let client = client_for(flags.kubeconfig.as_ref()).await?;
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    if !flags.leader_elect {
        return tokio::select! {
            r = start(client, &flags, &controllers, stop.clone()) => r,
            _ = &mut shutdown => { stop.cancel(); Ok(()) }
        };
    }
    let identity = flags.identity.clone().unwrap_or_else(leader::default_identity);
    let mut lc = leader::Config::new(
        flags.leader_elect_resource_namespace.clone(),
        flags.leader_elect_resource_name.clone(),
        identity.clone(),
    );
    lc.lease_duration = flags.leader_elect_lease_duration;
    lc.renew_deadline = flags.leader_elect_renew_deadline;
    lc.retry_period = flags.leader_elect_retry_period;
    let lease = format!("{}/{}", flags.leader_elect_resource_namespace, flags.leader_elect_resource_name);
    let mut elector = leader::LeaderElector::new(client.clone(), lc)?;
    tracing::info!(%identity, %lease, "Waiting to lead");
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        _ = elector.acquire() => {}
    }
    tracing::info!(%identity, %lease, "Leading");
    // Losing the lease ends the process, as upstream: a restart starts clean as a standby.
    let r = tokio::select! {
        lost = elector.hold() => Err(anyhow::anyhow!("lost the lease {lease}: {lost}")),
        r = start(client, &flags, &controllers, stop.clone()) => r,
        _ = &mut shutdown => Ok(()),
    };
    stop.cancel();
    let _ = elector.release().await;
    r
}

/// Starts the informers and the enabled controllers; returns when `stop` is cancelled.
pub async fn start(
    client: kube::Client,
    flags: &Flags,
    controllers: &BTreeSet<&'static str>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let missing: Vec<&str> = controllers.iter().copied().filter(|c| !IMPLEMENTED.contains(c)).collect();
    if !missing.is_empty() {
        tracing::warn!(controllers = %missing.join(","), "Not running these controllers: not implemented yet");
    }
    let events = Recorder::new(client.clone());
    let pods: Informer<Pod> = Informer::default();
    let sets: Informer<ReplicaSet> = Informer::default();
    let mut tasks = tokio::task::JoinSet::new();
    if controllers.contains("replicaset") {
        let c = ReplicaSetController::new(client.clone(), &sets, &pods, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("replicaset", queue, flags.concurrent_replicaset_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("replicationcontroller") {
        let rcs: Informer<ReplicationController> = Informer::default();
        let c = ReplicaSetController::<ReplicationController>::new(client.clone(), &rcs, &pods, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("replicationcontroller", queue, flags.concurrent_rc_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(rcs.run(Api::all(client.clone())));
    }
    let deployments: Informer<Deployment> = Informer::default();
    if controllers.contains("deployment") {
        let c = DeploymentController::new(client.clone(), &deployments, &sets, &pods, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("deployment", queue, flags.concurrent_deployment_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    let jobs: Informer<Job> = Informer::default();
    if controllers.contains("job") {
        let c = JobController::new(client.clone(), &jobs, &pods, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("job", queue, flags.concurrent_job_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("cronjob") {
        let cronjobs: Informer<CronJob> = Informer::default();
        let c = CronJobController::new(client.clone(), &cronjobs, &jobs, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("cronjob", queue, flags.concurrent_cronjob_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(cronjobs.run(Api::all(client.clone())));
    }
    if controllers.contains("ttl-after-finished") {
        let c = TtlAfterFinishedController::new(client.clone(), &jobs);
        let queue = c.queue.clone();
        let workers = flags.concurrent_ttl_after_finished_syncs;
        tasks.spawn(work("ttl-after-finished", queue, workers, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if ["job", "cronjob", "ttl-after-finished"].iter().any(|c| controllers.contains(c)) {
        tasks.spawn(jobs.clone().run(Api::all(client.clone())));
    }
    let network = crate::endpoints::Informers { pods: pods.clone(), ..Default::default() };
    let max_per_slice = flags.max_endpoints_per_slice as usize;
    if controllers.contains("endpoint") {
        let c = EndpointsController::new(client.clone(), &network);
        let queue = c.queue.clone();
        tasks.spawn(work("endpoint", queue, flags.concurrent_endpoint_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("endpointslice") {
        let c = EndpointSliceController::new(client.clone(), &network, max_per_slice);
        let queue = c.queue.clone();
        tasks.spawn(work("endpointslice", queue, flags.concurrent_service_endpoint_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("endpointslicemirroring") {
        let c = EndpointSliceMirroringController::new(client.clone(), &network, max_per_slice);
        let queue = c.queue.clone();
        let workers = flags.mirroring_concurrent_service_endpoint_syncs;
        tasks.spawn(work("endpointslicemirroring", queue, workers, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if ["endpoint", "endpointslice", "endpointslicemirroring"].iter().any(|c| controllers.contains(c)) {
        tasks.spawn(network.services.clone().run(Api::all(client.clone())));
        tasks.spawn(network.endpoints.clone().run(Api::all(client.clone())));
        tasks.spawn(network.slices.clone().run(Api::all(client.clone())));
    }
    if controllers.contains("persistentvolume-binder") {
        let (claims, volumes, classes) = (Informer::default(), Informer::default(), Informer::default());
        let dir = flags.enable_hostpath_provisioner.then(|| flags.hostpath_provisioner_dir.clone());
        let c = VolumeBinder::new(client.clone(), &claims, &volumes, &classes, dir, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("persistentvolume-binder", queue, 1, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(claims.run(Api::all(client.clone())));
        tasks.spawn(volumes.run(Api::all(client.clone())));
        tasks.spawn(classes.run(Api::all(client.clone())));
    }
    let nodes: Informer<Node> = Informer::default();
    if controllers.contains("nodeipam") && flags.allocate_node_cidrs {
        let blocks = Blocks::parse(&flags.cluster_cidr, flags.node_cidr_mask_size).map_err(anyhow::Error::msg)?;
        let c = NodeIpamController::new(client.clone(), &nodes, blocks);
        let queue = c.queue.clone();
        tasks.spawn(work("nodeipam", queue, 1, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("nodelifecycle") {
        let leases: Informer<Lease> = Informer::default();
        let c = NodeLifecycleController::new(
            client.clone(),
            &nodes,
            &leases,
            &pods,
            events.clone(),
            flags.node_monitor_grace_period,
            flags.node_monitor_period,
        );
        tasks.spawn(c.run(stop.clone()));
        tasks.spawn(leases.run(Api::namespaced(client.clone(), "kube-node-lease")));
    }
    let revisions: Informer<ControllerRevision> = Informer::default();
    if ["daemonset", "statefulset"].iter().any(|c| controllers.contains(c)) {
        tasks.spawn(revisions.clone().run(Api::all(client.clone())));
    }
    if controllers.contains("daemonset") {
        let daemon_sets: Informer<DaemonSet> = Informer::default();
        let c = DaemonSetController::new(client.clone(), &daemon_sets, &pods, &nodes, &revisions, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("daemonset", queue, flags.concurrent_daemonset_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(daemon_sets.run(Api::all(client.clone())));
    }
    if controllers.contains("horizontalpodautoscaling") {
        let hpas: Informer<HorizontalPodAutoscaler> = Informer::default();
        let period = flags.horizontal_pod_autoscaler_sync_period;
        let window = flags.horizontal_pod_autoscaler_downscale_stabilization;
        let c = crate::podautoscaler::HorizontalController::new(
            client.clone(),
            &hpas,
            &pods,
            events.clone(),
            period,
            window,
        );
        let queue = c.queue.clone();
        let workers = flags.concurrent_horizontal_pod_autoscaler_syncs;
        tasks.spawn(work("horizontalpodautoscaling", queue, workers, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(hpas.run(Api::all(client.clone())));
    }
    if controllers.contains("podgc") {
        let gc = crate::podgc::PodGc::new(client.clone(), &pods, &nodes, flags.terminated_pod_gc_threshold);
        tasks.spawn(gc.run(Duration::from_secs(20), stop.clone()));
    }
    if controllers.contains("service-lb-controller") {
        let pool = flags.load_balancer_ip_pool.as_deref().map(Pool::parse).transpose().map_err(anyhow::Error::msg)?;
        let c = ServiceLbController::new(client.clone(), &network.services, &nodes, pool, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("service-lb-controller", queue, 1, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        if !["endpoint", "endpointslice", "endpointslicemirroring"].iter().any(|c| controllers.contains(c)) {
            tasks.spawn(network.services.clone().run(Api::all(client.clone())));
        }
    }
    tasks.spawn(nodes.clone().run(Api::all(client.clone())));
    let namespaces: Informer<Namespace> = Informer::default();
    if controllers.contains("namespace") {
        let c = NamespaceController::new(client.clone(), &namespaces);
        let queue = c.queue.clone();
        tasks.spawn(work("namespace", queue, flags.concurrent_namespace_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("garbagecollector") {
        let gc = GarbageCollector::new(client.clone()).await?;
        tasks.spawn(gc.run(flags.concurrent_gc_syncs, stop.clone()));
    }
    let accounts: Informer<ServiceAccount> = Informer::default();
    if controllers.contains("serviceaccount") {
        let c = ServiceAccountController::new(client.clone(), &namespaces, &accounts);
        let queue = c.queue.clone();
        tasks.spawn(work("serviceaccount", queue, 1, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if controllers.contains("serviceaccount-token") {
        match &flags.service_account_private_key_file {
            // As upstream, which does not start this controller without a key.
            None => tracing::warn!(
                controller = "serviceaccount-token",
                "Not running: no --service-account-private-key-file to sign ServiceAccount tokens with"
            ),
            Some(key) => {
                let signer = crate::tokens::TokenSigner::load(key)?;
                // As upstream: without a CA bundle, the Secrets get no ca.crt.
                let ca = root_ca(flags.root_ca_file.as_deref(), flags.kubeconfig.as_deref()).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "ServiceAccount token Secrets get no ca.crt");
                    String::new()
                });
                let secrets: Informer<Secret> = Informer::default();
                let c = crate::tokens::TokensController::new(client.clone(), &accounts, &secrets, signer, ca);
                let queue = c.queue.clone();
                let workers = flags.concurrent_serviceaccount_token_syncs;
                tasks.spawn(work("serviceaccount-token", queue, workers, stop.clone(), move |key| {
                    let c = c.clone();
                    async move { c.sync(&key).await }
                }));
                tasks.spawn(secrets.run(Api::all(client.clone())));
            }
        }
    }
    if ["serviceaccount", "serviceaccount-token"].iter().any(|c| controllers.contains(c)) {
        tasks.spawn(accounts.run(Api::all(client.clone())));
    }
    if controllers.contains("root-ca-cert-publisher") {
        let ca = root_ca(flags.root_ca_file.as_deref(), flags.kubeconfig.as_deref())?;
        let configmaps: Informer<ConfigMap> = Informer::default();
        let c = RootCaPublisher::new(client.clone(), &namespaces, &configmaps, ca);
        let queue = c.queue.clone();
        tasks.spawn(work("root-ca-cert-publisher", queue, 1, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(configmaps.run(Api::all(client.clone())));
    }
    tasks.spawn(namespaces.clone().run(Api::all(client.clone())));
    tasks.spawn(pods.clone().run(Api::all(client.clone())));
    let stateful_sets: Informer<StatefulSet> = Informer::default();
    if controllers.contains("disruption") {
        let informers = crate::disruption::Informers {
            budgets: Informer::default(),
            pods: pods.clone(),
            replica_sets: sets.clone(),
            deployments: deployments.clone(),
            stateful_sets: stateful_sets.clone(),
        };
        let c = DisruptionController::new(client.clone(), &informers, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("disruption", queue, flags.concurrent_disruption_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
        tasks.spawn(informers.budgets.run(Api::all(client.clone())));
    }
    if controllers.contains("statefulset") {
        let c = StatefulSetController::new(client.clone(), &stateful_sets, &pods, &revisions, events.clone());
        let queue = c.queue.clone();
        tasks.spawn(work("statefulset", queue, flags.concurrent_statefulset_syncs, stop.clone(), move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }));
    }
    if ["disruption", "statefulset"].iter().any(|c| controllers.contains(c)) {
        tasks.spawn(stateful_sets.clone().run(Api::all(client.clone())));
    }
    tasks.spawn(sets.clone().run(Api::all(client.clone())));
    tasks.spawn(deployments.clone().run(Api::all(client.clone())));
    tokio::join!(pods.synced(), sets.synced(), deployments.synced(), namespaces.synced());
    tracing::info!(controllers = %controllers.iter().filter(|c| IMPLEMENTED.contains(c)).copied().collect::<Vec<_>>().join(","), "Started controllers");
    stop.cancelled().await;
    tasks.shutdown().await;
    Ok(())
}

/// `workers` tasks draining `queue` with `sync` until `stop`: success forgets the key's
/// failures (and requeues it when asked), failure requeues it with backoff.
pub async fn work<F, Fut, E>(
    name: &'static str,
    queue: Arc<WorkQueue>,
    workers: usize,
    stop: CancellationToken,
    sync: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>, E>> + Send,
    E: Display,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (queue, sync) = (queue.clone(), sync.clone());
        set.spawn(async move {
            while let Some(key) = queue.get().await {
                let span = tracing::info_span!("reconcile", controller = name, object = %key);
                match sync(key.clone()).instrument(span).await {
                    Ok(again) => {
                        queue.forget(&key);
                        if let Some(after) = again {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller = name, object = %key, error = %e, "Sync failed; retrying");
                        queue.add_rate_limited(&key);
                    }
                }
                queue.done(&key);
            }
        });
    }
    stop.cancelled().await;
    queue.shut_down();
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn the_downscale_stabilization_window_defaults_to_upstreams_five_minutes() {
        assert_eq!(Flags::default().horizontal_pod_autoscaler_downscale_stabilization, Duration::from_secs(300));
        let flags = Flags::parse_from(["controller-manager", "--horizontal-pod-autoscaler-downscale-stabilization=3s"]);
        assert_eq!(flags.horizontal_pod_autoscaler_downscale_stabilization, Duration::from_secs(3));
    }

    #[test]
    fn controllers_flag_follows_upstream() {
        let all = enabled(&list("*")).expect("ok");
        assert!(all.contains("replicaset") && all.contains("garbagecollector"));
        assert!(!all.contains("tokencleaner"), "off unless named");
        let some = enabled(&list("*,-replicaset,tokencleaner")).expect("ok");
        assert!(!some.contains("replicaset") && some.contains("tokencleaner"));
        assert_eq!(enabled(&list("replicaset-controller")).expect("ok"), BTreeSet::from(["replicaset"]));
        assert!(enabled(&list("nope")).expect_err("unknown").contains("nope"));
    }
}
