//! The KubeSchedulerConfiguration file (`kubescheduler.config.k8s.io/v1`) as upstream reads it:
//! profiles with plugins enabled and disabled per extension point (or `multiPoint`), score
//! weights, NodeResourcesFit's scoring strategy, percentageOfNodesToScore, backoff and leader
//! election. Unknown plugins and strategies we do not have are errors, not silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::plugins::FitScoring;

/// Filter plugins in upstream's order.
pub const FILTERS: &[&str] = &[
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
];

/// Score plugins with upstream's default weights.
pub const SCORES: &[(&str, i64)] = &[
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodeResourcesFit", 1),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
];

/// Upstream plugins that are part of every profile here but have nothing to configure
/// (queue sort, binder, gates) or that act on volumes, which this cluster does not serve.
const ACCEPTED: &[&str] = &[
    "PrioritySort",
    "DefaultBinder",
    "SchedulingGates",
    "DefaultPreemption",
    "VolumeRestrictions",
    "NodeVolumeLimits",
    "VolumeBinding",
    "VolumeZone",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub scheduler_name: String,
    /// Enabled filters, in upstream's order.
    pub filters: Vec<&'static str>,
    /// Enabled scores with their weights.
    pub scores: Vec<(&'static str, i64)>,
    pub fit: FitScoring,
    pub preemption: bool,
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Profile {
    pub fn default_named(name: &str) -> Profile {
        Profile {
            scheduler_name: name.to_string(),
            filters: FILTERS.to_vec(),
            scores: SCORES.to_vec(),
            fit: FitScoring::default(),
            preemption: true,
            percentage_of_nodes_to_score: None,
        }
    }

    pub fn filter_enabled(&self, name: &str) -> bool {
        self.filters.contains(&name)
    }

    pub fn weight(&self, name: &str) -> Option<i64> {
        self.scores.iter().find(|(n, _)| *n == name).map(|(_, w)| *w)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeaderElection {
    pub leader_elect: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resource_namespace: String,
    pub resource_name: String,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            leader_elect: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resource_namespace: "kube-system".into(),
            resource_name: "kube-scheduler".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub profiles: Vec<Profile>,
    pub percentage_of_nodes_to_score: Option<u32>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub leader_election: LeaderElection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: None,
            profiles: vec![Profile::default_named("default-scheduler")],
            percentage_of_nodes_to_score: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            leader_election: LeaderElection::default(),
        }
    }
}

// ---- the file's shape ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: Option<String>,
    kind: Option<String>,
    client_connection: Option<ClientConnection>,
    leader_election: Option<LeaderElectionFile>,
    percentage_of_nodes_to_score: Option<u32>,
    pod_initial_backoff_seconds: Option<u64>,
    pod_max_backoff_seconds: Option<u64>,
    profiles: Option<Vec<ProfileFile>>,
    // Accepted as upstream has them; nothing here depends on them.
    #[allow(dead_code)]
    parallelism: Option<u32>,
    #[allow(dead_code)]
    enable_profiling: Option<bool>,
    #[allow(dead_code)]
    enable_contention_profiling: Option<bool>,
    #[allow(dead_code)]
    delay_cache_until_active: Option<bool>,
    extenders: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientConnection {
    kubeconfig: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaderElectionFile {
    leader_elect: Option<bool>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    resource_namespace: Option<String>,
    resource_name: Option<String>,
    resource_lock: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileFile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<u32>,
    plugins: Option<BTreeMap<String, PluginSet>>,
    plugin_config: Option<Vec<PluginConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PluginSet {
    enabled: Option<Vec<PluginRef>>,
    disabled: Option<Vec<PluginRef>>,
}

impl PluginSet {
    fn disables(&self, plugin: &str) -> bool {
        self.disabled.iter().flatten().any(|r| r.name == "*" || r.name == plugin)
    }

    /// `Some(weight)` when the set enables the plugin.
    fn weight_of(&self, plugin: &str) -> Option<Option<i64>> {
        self.enabled.iter().flatten().find(|r| r.name == plugin).map(|r| r.weight)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginRef {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfig {
    name: String,
    args: Option<serde_json::Value>,
}

fn known(name: &str) -> bool {
    FILTERS.contains(&name) || SCORES.iter().any(|(n, _)| *n == name) || ACCEPTED.contains(&name)
}

fn check_percentage(p: Option<u32>, what: &str) -> anyhow::Result<()> {
    if p.is_some_and(|p| p > 100) {
        bail!("{what}: percentageOfNodesToScore must be between 0 and 100");
    }
    Ok(())
}

fn build_profile(p: ProfileFile) -> anyhow::Result<Profile> {
    let name = p.scheduler_name.unwrap_or_else(|| "default-scheduler".into());
    let mut profile = Profile::default_named(&name);
    check_percentage(p.percentage_of_nodes_to_score, &format!("profile {name}"))?;
    profile.percentage_of_nodes_to_score = p.percentage_of_nodes_to_score;
    let mut sets = p.plugins.unwrap_or_default();
    for point in sets.keys() {
        const POINTS: &[&str] = &[
            "multiPoint",
            "preEnqueue",
            "queueSort",
            "preFilter",
            "filter",
            "postFilter",
            "preScore",
            "score",
            "reserve",
            "permit",
            "preBind",
            "bind",
            "postBind",
        ];
        if !POINTS.contains(&point.as_str()) {
            bail!("profile {name}: unknown extension point {point:?}");
        }
    }
    let multi = sets.remove("multiPoint").unwrap_or_default();
    let filter = sets.remove("filter").unwrap_or_default();
    let score = sets.remove("score").unwrap_or_default();
    let post_filter = sets.remove("postFilter").unwrap_or_default();
    for set in [&multi, &filter, &score, &post_filter].into_iter().chain(sets.values()) {
        for r in set.enabled.iter().flatten().chain(set.disabled.iter().flatten()) {
            if r.name != "*" && !known(&r.name) {
                bail!("profile {name}: plugin {:?} is not registered", r.name);
            }
        }
    }
    // multiPoint first, then the extension point's own sets on top, as upstream merges them.
    let on = |point: &PluginSet, plugin: &str| {
        let by_multi = !multi.disables(plugin) || multi.weight_of(plugin).is_some();
        (by_multi && !point.disables(plugin)) || point.weight_of(plugin).is_some()
    };
    profile.filters = FILTERS.iter().copied().filter(|f| on(&filter, f)).collect();
    profile.scores = SCORES
        .iter()
        .filter_map(|(s, default)| {
            let weight = score.weight_of(s).flatten().or(multi.weight_of(s).flatten()).unwrap_or(*default);
            (on(&score, s) && weight > 0).then_some((*s, weight))
        })
        .collect();
    profile.preemption = on(&post_filter, "DefaultPreemption");
    for pc in p.plugin_config.unwrap_or_default() {
        match pc.name.as_str() {
            "NodeResourcesFit" => {
                let strategy = pc.args.as_ref().and_then(|a| a.get("scoringStrategy"));
                if let Some(s) = strategy {
                    profile.fit.most_allocated = match s
                        .get("type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("LeastAllocated")
                    {
                        "LeastAllocated" => false,
                        "MostAllocated" => true,
                        other => bail!(
                            "profile {name}: NodeResourcesFit scoringStrategy {other:?} is not supported (LeastAllocated, MostAllocated)"
                        ),
                    };
                    if let Some(rs) = s.get("resources").and_then(|r| r.as_array()) {
                        profile.fit.resources = rs
                            .iter()
                            .map(|r| {
                                let n = r.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
                                let w = r.get("weight").and_then(|w| w.as_i64()).unwrap_or(1);
                                if n.is_empty() || w <= 0 {
                                    bail!(
                                        "profile {name}: NodeResourcesFit resources need a name and a positive weight"
                                    );
                                }
                                Ok((n, w))
                            })
                            .collect::<anyhow::Result<_>>()?;
                    }
                }
            }
            other if known(other) => {
                tracing::warn!(profile = %name, plugin = other, "pluginConfig for this plugin is not used here");
            }
            other => bail!("profile {name}: pluginConfig for plugin {other:?}, which is not registered"),
        }
    }
    Ok(profile)
}

impl Config {
    pub fn from_yaml(text: &str) -> anyhow::Result<Config> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(v) = file.api_version.as_deref()
            && v != "kubescheduler.config.k8s.io/v1"
        {
            bail!("apiVersion {v:?} is not supported (kubescheduler.config.k8s.io/v1)");
        }
        if let Some(k) = file.kind.as_deref()
            && k != "KubeSchedulerConfiguration"
        {
            bail!("kind {k:?} is not KubeSchedulerConfiguration");
        }
        check_percentage(file.percentage_of_nodes_to_score, "config")?;
        if file.extenders.is_some_and(|e| !e.is_empty()) {
            bail!("extenders are not supported");
        }
        let mut c = Config {
            kubeconfig: file.client_connection.and_then(|c| c.kubeconfig).filter(|k| !k.is_empty()).map(Into::into),
            percentage_of_nodes_to_score: file.percentage_of_nodes_to_score,
            ..Config::default()
        };
        if let Some(s) = file.pod_initial_backoff_seconds {
            c.initial_backoff = Duration::from_secs(s);
        }
        if let Some(s) = file.pod_max_backoff_seconds {
            c.max_backoff = Duration::from_secs(s);
        }
        if c.max_backoff < c.initial_backoff {
            bail!("podMaxBackoffSeconds must not be less than podInitialBackoffSeconds");
        }
        if let Some(le) = file.leader_election {
            let l = &mut c.leader_election;
            if let Some(v) = le.leader_elect {
                l.leader_elect = v;
            }
            let fields: [(&str, Option<String>, &mut Duration); 3] = [
                ("leaseDuration", le.lease_duration, &mut l.lease_duration),
                ("renewDeadline", le.renew_deadline, &mut l.renew_deadline),
                ("retryPeriod", le.retry_period, &mut l.retry_period),
            ];
            for (field, value, target) in fields {
                if let Some(v) = value {
                    *target = leader::parse_duration(&v).map_err(|e| anyhow::anyhow!("leaderElection.{field}: {e}"))?;
                }
            }
            if let Some(v) = le.resource_namespace {
                l.resource_namespace = v;
            }
            if let Some(v) = le.resource_name {
                l.resource_name = v;
            }
            if le.resource_lock.as_deref().is_some_and(|r| r != "leases") {
                bail!("leaderElection.resourceLock: only \"leases\" is supported");
            }
        }
        if let Some(profiles) = file.profiles {
            c.profiles = profiles.into_iter().map(build_profile).collect::<anyhow::Result<_>>()?;
        }
        if c.profiles.is_empty() {
            c.profiles.push(Profile::default_named("default-scheduler"));
        }
        for (i, p) in c.profiles.iter().enumerate() {
            if c.profiles[..i].iter().any(|o| o.scheduler_name == p.scheduler_name) {
                bail!("duplicate profile with scheduler name {:?}", p.scheduler_name);
            }
        }
        Ok(c)
    }

    pub fn profile(&self, scheduler_name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.scheduler_name == scheduler_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_is_read_as_upstream() {
        let c = Config::from_yaml(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/scheduler.conf
leaderElection:
  leaderElect: false
  leaseDuration: 30s
percentageOfNodesToScore: 50
podMaxBackoffSeconds: 20
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  percentageOfNodesToScore: 100
  plugins:
    score:
      disabled:
      - name: NodeResourcesBalancedAllocation
      enabled:
      - name: NodeResourcesFit
        weight: 5
    filter:
      disabled:
      - name: NodePorts
    postFilter:
      disabled:
      - name: DefaultPreemption
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 2
        - name: memory
          weight: 1
"#,
        )
        .expect("config");
        assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/etc/kubernetes/scheduler.conf")));
        assert!(!c.leader_election.leader_elect);
        assert_eq!(c.leader_election.lease_duration, Duration::from_secs(30));
        assert_eq!(c.leader_election.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.percentage_of_nodes_to_score, Some(50));
        assert_eq!(c.max_backoff, Duration::from_secs(20));
        assert_eq!(c.profile("default-scheduler"), Some(&Profile::default_named("default-scheduler")));
        let b = c.profile("bin-packer").expect("bin-packer");
        assert!(!b.filter_enabled("NodePorts") && b.filter_enabled("NodeResourcesFit"));
        assert_eq!(b.weight("NodeResourcesFit"), Some(5));
        assert_eq!(b.weight("NodeResourcesBalancedAllocation"), None);
        assert_eq!(b.weight("TaintToleration"), Some(3));
        assert!(!b.preemption);
        assert!(b.fit.most_allocated);
        assert_eq!(b.fit.resources, vec![("cpu".to_string(), 2), ("memory".to_string(), 1)]);
        assert_eq!(b.percentage_of_nodes_to_score, Some(100));
    }

    #[test]
    fn multi_point_disables_everything_then_enables_some() {
        let c = Config::from_yaml(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- plugins:
    multiPoint:
      disabled:
      - name: "*"
      enabled:
      - name: NodeResourcesFit
      - name: ImageLocality
        weight: 4
"#,
        )
        .expect("config");
        let p = &c.profiles[0];
        assert_eq!(p.filters, vec!["NodeResourcesFit"]);
        assert_eq!(p.scores, vec![("NodeResourcesFit", 1), ("ImageLocality", 4)]);
        assert!(!p.preemption);
    }

    #[test]
    fn mistakes_are_errors() {
        for (yaml, want) in [
            ("apiVersion: kubescheduler.config.k8s.io/v1beta3\n", "is not supported"),
            ("profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: NoSuchPlugin\n", "not registered"),
            ("profiles:\n- schedulerName: a\n- schedulerName: a\n", "duplicate profile"),
            ("percentageOfNodesToScore: 150\n", "between 0 and 100"),
            ("bogus: 1\n", "bogus"),
            (
                "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: RequestedToCapacityRatio\n",
                "not supported",
            ),
            ("leaderElection:\n  leaseDuration: soon\n", "leaseDuration"),
        ] {
            let err = format!("{:#}", Config::from_yaml(yaml).expect_err(yaml));
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
