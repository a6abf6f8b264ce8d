//! The table of served resources.
//!
//! Everything generic in the apiserver (routing, discovery, storage keys, the REST verbs, watch,
//! Table output, OpenAPI) reads this table; a kind's own behaviour (defaulting, validation, table
//! rows) hangs off its [`Strategy`]. Adding a resource is one [`entry`] line in
//! [`Registry::builtin`].
//!
//! Architecture Invariant: the types come from `k8s-openapi`; a body is decoded into the typed
//! struct and re-encoded ([`ResourceInfo::normalize`]), so what is stored is exactly what the
//! Kubernetes type can hold, and unknown fields never reach etcd.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::{
    apps, authentication, authorization, autoscaling, batch, coordination, core, discovery, events, networking, policy,
    scheduling, storage,
};
use k8s_openapi::schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kinds;

/// How `metadata.name` must look for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most kinds.
    Subdomain,
    /// RFC 1123 label: namespaces, services.
    Label,
    /// Anything that is a valid path segment: events, leases.
    PathSegment,
}

/// A subresource beyond `status`, which every kind with a status gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// A resource served in one form and stored in another's: `events.k8s.io/v1` Events are core
/// `v1` Events in storage. The conversions run on the whole object at the storage boundary.
pub struct StoredAs {
    pub to_storage: fn(&Value) -> Value,
    pub from_storage: fn(&Value) -> Value,
}

/// One served resource.
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Serves `/status`; the main resource then ignores status changes.
    pub has_status: bool,
    /// `metadata.generation` starts at 1 and is bumped when anything but metadata and status changes.
    pub tracks_generation: bool,
    /// DELETE answers with the object rather than a `Status` (pods, serviceaccounts).
    pub delete_returns_object: bool,
    pub name_rule: NameRule,
    /// Field selector labels beyond `metadata.name` / `metadata.namespace`, with the dotted JSON
    /// path each one reads.
    pub field_labels: &'static [(&'static str, &'static str)],
    pub extra_subresources: &'static [Subresource],
    /// PUT of a missing object creates it (endpoints, events, leases), as upstream allows.
    pub create_on_update: bool,
    pub verbs: &'static [&'static str],
    /// Create-only and never stored: the request is answered by computing a status (access and
    /// token reviews).
    pub ephemeral: bool,
    pub strategy: &'static dyn Strategy,
    /// Stored in another resource's form (sharing its key prefix), converted on the way.
    pub stored_as: Option<&'static StoredAs>,
    normalize: fn(Value) -> Result<Value, String>,
    /// The kind's OpenAPI schema, from `k8s-openapi`; definitions go to the generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// The schema's name, `io.k8s.api.core.v1.Pod`.
    pub schema_name: fn() -> std::borrow::Cow<'static, str>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceInfo({})", self.qualified_resource())
    }
}

pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const NAMESPACE_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
pub const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `deployments.apps`, or `pods` for the core group, as upstream names resources in messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The etcd key prefix holding every object of this resource: `/registry/<resource>/`.
    /// Built-in plurals are unique across groups, so the group is not part of the key; the one
    /// plural served by two groups, `events`, names the same objects in both ([`StoredAs`]).
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.plural)
    }

    /// The etcd key of one object (`namespace` is ignored for cluster-scoped resources).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.key_prefix())
        } else {
            format!("{}{name}", self.key_prefix())
        }
    }

    /// The prefix for a list: one namespace, or everything when `namespace` is empty.
    pub fn list_prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("{}{namespace}/", self.key_prefix())
        } else {
            self.key_prefix()
        }
    }

    /// Decode into the Kubernetes type and back: drops unknown fields, rejects wrong types. The
    /// error names the path of the offending field.
    pub fn normalize(&self, obj: Value) -> Result<Value, String> {
        (self.normalize)(obj)
    }

    /// A stored object, as this resource serves it.
    pub fn served_value(&self, stored: Value) -> Value {
        match self.stored_as {
            Some(conv) => (conv.from_storage)(&stored),
            None => stored,
        }
    }

    /// An object of this resource, encoded as storage holds it.
    pub fn stored_bytes(&self, obj: &Value) -> Vec<u8> {
        match self.stored_as {
            Some(conv) => crate::codec::encode_for_storage(&(conv.to_storage)(obj)),
            None => crate::codec::encode_for_storage(obj),
        }
    }

    pub fn subresource(&self, name: &str) -> Option<Subresource> {
        if name == "status" && self.has_status {
            return Some(Subresource {
                name: "status",
                group: self.group,
                version: self.version,
                kind: self.kind,
                verbs: SUBRESOURCE_VERBS,
            });
        }
        self.extra_subresources.iter().find(|s| s.name == name).copied()
    }

    pub fn subresources(&self) -> Vec<Subresource> {
        let mut all = Vec::new();
        if let Some(status) = self.subresource("status") {
            all.push(status);
        }
        all.extend_from_slice(self.extra_subresources);
        all
    }

    /// The JSON path a field selector label reads, if this kind supports it.
    pub fn field_path(&self, label: &str) -> Option<&'static str> {
        match label {
            "metadata.name" => Some("metadata.name"),
            "metadata.namespace" if self.namespaced => Some("metadata.namespace"),
            _ => self.field_labels.iter().find(|(l, _)| *l == label).map(|(_, p)| *p),
        }
    }
}

/// A kind's own behaviour. Defaults do nothing, so plain kinds need no code.
pub trait Strategy: Send + Sync {
    /// Nodes are created with the status their kubelet reports; every other kind starts with an
    /// empty status that only `/status` writes fill.
    fn keeps_status_on_create(&self) -> bool {
        false
    }
    /// Defaults and server-owned fields on create, after generic metadata handling.
    fn prepare_for_create(&self, _obj: &mut Value) {}
    /// On update of the main resource, after status and server-owned metadata were carried over.
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}
    fn validate(&self, _obj: &Value) -> Vec<crate::error::Cause> {
        Vec::new()
    }
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<crate::error::Cause> {
        Vec::new()
    }
    /// The Table columns and rows for `kubectl get`; `None` means NAME and AGE.
    fn table(&self) -> Option<&'static crate::table::TableDef> {
        None
    }
}

/// Kinds without behaviour of their own.
pub struct PlainStrategy;
impl Strategy for PlainStrategy {}

fn normalize_as<K: DeserializeOwned + Serialize>(obj: Value) -> Result<Value, String> {
    let typed: K = serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
    })?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Builder for one table entry; starts from what the Kubernetes type knows about itself.
pub struct Entry(ResourceInfo);

/// What every entry starts from: a stored kind with every verb and nothing extra.
#[allow(clippy::too_many_arguments)]
fn base(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    normalize: fn(Value) -> Result<Value, String>,
    schema: fn(&mut SchemaGenerator) -> Schema,
    schema_name: fn() -> std::borrow::Cow<'static, str>,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        kind,
        list_kind,
        plural,
        singular: kind.to_ascii_lowercase(),
        namespaced,
        short_names: &[],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        delete_returns_object: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
        extra_subresources: &[],
        create_on_update: false,
        verbs: ALL_VERBS,
        ephemeral: false,
        strategy: &PlainStrategy,
        stored_as: None,
        normalize,
        schema,
        schema_name,
    }
}

fn is_namespaced<K: k8s_openapi::Resource>() -> bool
where
    <K as k8s_openapi::Resource>::Scope: 'static,
{
    std::any::TypeId::of::<K::Scope>() == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>()
}

pub fn entry<K>() -> Entry
where
    K: k8s_openapi::Resource + k8s_openapi::ListableResource + DeserializeOwned + Serialize + JsonSchema,
    <K as k8s_openapi::Resource>::Scope: 'static,
{
    Entry(base(
        K::GROUP,
        K::VERSION,
        K::KIND,
        K::LIST_KIND,
        K::URL_PATH_SEGMENT,
        is_namespaced::<K>(),
        normalize_as::<K>,
        |g| g.subschema_for::<K>(),
        K::schema_name,
    ))
}

/// A read-only kind of `metrics.k8s.io/v1beta1`, computed from the kubelets' usage reports
/// (`metrics_api.rs`), never stored.
fn metrics(
    kind: &'static str,
    list_kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    schema_name: fn() -> std::borrow::Cow<'static, str>,
) -> Entry {
    let mut info = base(
        "metrics.k8s.io",
        "v1beta1",
        kind,
        list_kind,
        plural,
        namespaced,
        Ok,
        |g| g.subschema_for::<Value>(),
        schema_name,
    );
    info.verbs = &["get", "list"];
    info.ephemeral = true;
    Entry(info)
}

/// A create-only kind that is answered, not stored: the reviews of authentication.k8s.io and
/// authorization.k8s.io.
pub fn review<K>() -> Entry
where
    K: k8s_openapi::Resource + DeserializeOwned + Serialize + JsonSchema,
    <K as k8s_openapi::Resource>::Scope: 'static,
{
    let mut info = base(
        K::GROUP,
        K::VERSION,
        K::KIND,
        "",
        K::URL_PATH_SEGMENT,
        is_namespaced::<K>(),
        normalize_as::<K>,
        |g| g.subschema_for::<K>(),
        K::schema_name,
    );
    info.verbs = &["create"];
    info.ephemeral = true;
    Entry(info)
}

impl Entry {
    pub fn short(mut self, names: &'static [&'static str]) -> Self {
        self.0.short_names = names;
        self
    }
    pub fn categories(mut self, c: &'static [&'static str]) -> Self {
        self.0.categories = c;
        self
    }
    pub fn status(mut self) -> Self {
        self.0.has_status = true;
        self
    }
    pub fn generation(mut self) -> Self {
        self.0.tracks_generation = true;
        self
    }
    pub fn returns_deleted(mut self) -> Self {
        self.0.delete_returns_object = true;
        self
    }
    pub fn names(mut self, rule: NameRule) -> Self {
        self.0.name_rule = rule;
        self
    }
    pub fn fields(mut self, f: &'static [(&'static str, &'static str)]) -> Self {
        self.0.field_labels = f;
        self
    }
    pub fn subresources(mut self, s: &'static [Subresource]) -> Self {
        self.0.extra_subresources = s;
        self
    }
    pub fn create_on_update(mut self) -> Self {
        self.0.create_on_update = true;
        self
    }
    pub fn verbs(mut self, v: &'static [&'static str]) -> Self {
        self.0.verbs = v;
        self
    }
    pub fn strategy(mut self, s: &'static dyn Strategy) -> Self {
        self.0.strategy = s;
        self
    }
    pub fn stored_as(mut self, s: &'static StoredAs) -> Self {
        self.0.stored_as = Some(s);
        self
    }
}

const ALL: &[&str] = &["all"];

const POD_FIELDS: &[(&str, &str)] = &[
    ("spec.nodeName", "spec.nodeName"),
    ("spec.restartPolicy", "spec.restartPolicy"),
    ("spec.schedulerName", "spec.schedulerName"),
    ("spec.serviceAccountName", "spec.serviceAccountName"),
    ("spec.hostNetwork", "spec.hostNetwork"),
    ("status.phase", "status.phase"),
    ("status.podIP", "status.podIP"),
    ("status.nominatedNodeName", "status.nominatedNodeName"),
];
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject.kind", "involvedObject.kind"),
    ("involvedObject.namespace", "involvedObject.namespace"),
    ("involvedObject.name", "involvedObject.name"),
    ("involvedObject.uid", "involvedObject.uid"),
    ("involvedObject.apiVersion", "involvedObject.apiVersion"),
    ("involvedObject.resourceVersion", "involvedObject.resourceVersion"),
    ("involvedObject.fieldPath", "involvedObject.fieldPath"),
    ("reason", "reason"),
    ("reportingComponent", "reportingComponent"),
    ("source", "source.component"),
    ("type", "type"),
];

const SCALE: &[Subresource] =
    &[Subresource { name: "scale", group: "autoscaling", version: "v1", kind: "Scale", verbs: SUBRESOURCE_VERBS }];
const POD_SUBRESOURCES: &[Subresource] = &[
    Subresource { name: "binding", group: "", version: "v1", kind: "Binding", verbs: &["create"] },
    Subresource { name: "eviction", group: "policy", version: "v1", kind: "Eviction", verbs: &["create"] },
    Subresource { name: "log", group: "", version: "v1", kind: "Pod", verbs: &["get"] },
    Subresource { name: "exec", group: "", version: "v1", kind: "PodExecOptions", verbs: &["create", "get"] },
    Subresource { name: "attach", group: "", version: "v1", kind: "PodAttachOptions", verbs: &["create", "get"] },
    Subresource {
        name: "portforward",
        group: "",
        version: "v1",
        kind: "PodPortForwardOptions",
        verbs: &["create", "get"],
    },
    Subresource { name: "proxy", group: "", version: "v1", kind: "PodProxyOptions", verbs: PROXY_VERBS },
];

/// What discovery lists for the proxy subresources, as upstream: any method is relayed.
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];
const SERVICE_PROXY: &[Subresource] =
    &[Subresource { name: "proxy", group: "", version: "v1", kind: "ServiceProxyOptions", verbs: PROXY_VERBS }];
const NODE_PROXY: &[Subresource] =
    &[Subresource { name: "proxy", group: "", version: "v1", kind: "NodeProxyOptions", verbs: PROXY_VERBS }];

const SERVICE_ACCOUNT_TOKEN: &[Subresource] = &[Subresource {
    name: "token",
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    verbs: &["create"],
}];

const NAMESPACE_FINALIZE: &[Subresource] =
    &[Subresource { name: "finalize", group: "", version: "v1", kind: "Namespace", verbs: &["update"] }];

/// Every served resource, looked up by group and plural, by kind and by short name.
pub struct Registry {
    entries: Vec<Arc<ResourceInfo>>,
    by_plural: HashMap<(String, String), usize>,
}

impl Registry {
    pub fn builtin() -> Registry {
        use NameRule::*;
        let entries = vec![
            entry::<core::v1::Namespace>()
                .short(&["ns"])
                .status()
                .names(Label)
                .fields(&[("status.phase", "status.phase")])
                .subresources(NAMESPACE_FINALIZE)
                .verbs(NAMESPACE_VERBS)
                .strategy(&kinds::NamespaceStrategy),
            entry::<core::v1::Pod>()
                .short(&["po"])
                .categories(ALL)
                .status()
                .returns_deleted()
                .fields(POD_FIELDS)
                .subresources(POD_SUBRESOURCES)
                .strategy(&kinds::PodStrategy),
            entry::<core::v1::Service>()
                .short(&["svc"])
                .categories(ALL)
                .status()
                .names(Label)
                .fields(&[("spec.clusterIP", "spec.clusterIP"), ("spec.type", "spec.type")])
                .subresources(SERVICE_PROXY)
                .strategy(&kinds::ServiceStrategy),
            entry::<core::v1::Endpoints>().short(&["ep"]).create_on_update().strategy(&kinds::EndpointsStrategy),
            entry::<core::v1::ConfigMap>().short(&["cm"]).strategy(&kinds::ConfigMapStrategy),
            entry::<core::v1::Secret>().fields(&[("type", "type")]).strategy(&kinds::SecretStrategy),
            entry::<core::v1::Node>()
                .short(&["no"])
                .status()
                .fields(&[("spec.unschedulable", "spec.unschedulable")])
                .subresources(NODE_PROXY)
                .strategy(&kinds::NodeStrategy),
            entry::<core::v1::Event>()
                .short(&["ev"])
                .create_on_update()
                .names(PathSegment)
                .fields(EVENT_FIELDS)
                .strategy(&kinds::EventStrategy),
            entry::<core::v1::ServiceAccount>()
                .short(&["sa"])
                .returns_deleted()
                .subresources(SERVICE_ACCOUNT_TOKEN)
                .strategy(&kinds::ServiceAccountStrategy),
            entry::<core::v1::ReplicationController>()
                .short(&["rc"])
                .categories(ALL)
                .status()
                .generation()
                .subresources(SCALE)
                .strategy(&kinds::ReplicationControllerStrategy),
            entry::<core::v1::PersistentVolume>().short(&["pv"]).status().strategy(&kinds::PersistentVolumeStrategy),
            entry::<core::v1::PersistentVolumeClaim>()
                .short(&["pvc"])
                .status()
                .strategy(&kinds::PersistentVolumeClaimStrategy),
            entry::<apps::v1::Deployment>()
                .short(&["deploy"])
                .categories(ALL)
                .status()
                .generation()
                .subresources(SCALE)
                .strategy(&kinds::DeploymentStrategy),
            entry::<apps::v1::ReplicaSet>()
                .short(&["rs"])
                .categories(ALL)
                .status()
                .generation()
                .fields(&[("status.replicas", "status.replicas")])
                .subresources(SCALE)
                .strategy(&kinds::ReplicaSetStrategy),
            entry::<apps::v1::DaemonSet>()
                .short(&["ds"])
                .categories(ALL)
                .status()
                .generation()
                .strategy(&kinds::DaemonSetStrategy),
            entry::<apps::v1::StatefulSet>()
                .short(&["sts"])
                .categories(ALL)
                .status()
                .generation()
                .subresources(SCALE)
                .strategy(&kinds::StatefulSetStrategy),
            entry::<apps::v1::ControllerRevision>().strategy(&kinds::ControllerRevisionStrategy),
            entry::<batch::v1::Job>()
                .categories(ALL)
                .status()
                .generation()
                .fields(&[("status.successful", "status.succeeded")])
                .strategy(&kinds::JobStrategy),
            entry::<batch::v1::CronJob>()
                .short(&["cj"])
                .categories(ALL)
                .status()
                .generation()
                .strategy(&kinds::CronJobStrategy),
            entry::<autoscaling::v2::HorizontalPodAutoscaler>()
                .short(&["hpa"])
                .categories(ALL)
                .status()
                .generation()
                .strategy(&kinds::HorizontalPodAutoscalerStrategy),
            entry::<events::v1::Event>()
                .short(&["ev"])
                .create_on_update()
                .names(PathSegment)
                .fields(crate::events_v1::FIELDS)
                .stored_as(&crate::events_v1::STORED_AS_CORE)
                .strategy(&crate::events_v1::EventsV1Strategy),
            entry::<coordination::v1::Lease>().names(PathSegment).create_on_update().strategy(&kinds::LeaseStrategy),
            entry::<discovery::v1::EndpointSlice>().strategy(&kinds::EndpointSliceStrategy),
            entry::<policy::v1::PodDisruptionBudget>()
                .short(&["pdb"])
                .status()
                .generation()
                .strategy(&kinds::PodDisruptionBudgetStrategy),
            entry::<networking::v1::Ingress>().short(&["ing"]).status().generation().strategy(&kinds::IngressStrategy),
            entry::<networking::v1::IngressClass>().generation().strategy(&kinds::IngressClassStrategy),
            entry::<storage::v1::StorageClass>().short(&["sc"]).strategy(&kinds::StorageClassStrategy),
            entry::<scheduling::v1::PriorityClass>().short(&["pc"]).strategy(&kinds::PriorityClassStrategy),
            review::<authentication::v1::SelfSubjectReview>(),
            review::<authentication::v1::TokenReview>(),
            review::<authorization::v1::SelfSubjectAccessReview>(),
            review::<authorization::v1::SelfSubjectRulesReview>(),
            review::<authorization::v1::SubjectAccessReview>(),
            review::<authorization::v1::LocalSubjectAccessReview>(),
            metrics("NodeMetrics", "NodeMetricsList", "nodes", false, || {
                "io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics".into()
            }),
            metrics("PodMetrics", "PodMetricsList", "pods", true, || {
                "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics".into()
            }),
        ];
        Registry::new(entries.into_iter().map(|e| e.0).collect())
    }

    pub fn new(entries: Vec<ResourceInfo>) -> Registry {
        let entries: Vec<Arc<ResourceInfo>> = entries.into_iter().map(Arc::new).collect();
        let by_plural =
            entries.iter().enumerate().map(|(i, e)| ((e.group.to_string(), e.plural.to_string()), i)).collect();
        Registry { entries, by_plural }
    }

    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.entries
    }

    pub fn by_plural(&self, group: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.by_plural.get(&(group.to_string(), plural.to_string())).map(|&i| &self.entries[i])
    }

    /// The resource served at `/api/v1` or `/apis/<group>/<version>` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.by_plural(group, plural).filter(|r| r.version == version)
    }

    /// Group names in discovery order (core first, then as registered).
    pub fn groups(&self) -> Vec<&'static str> {
        let mut groups: Vec<&'static str> = Vec::new();
        for e in &self.entries {
            if !groups.contains(&e.group) {
                groups.push(e.group);
            }
        }
        groups
    }

    /// The versions served for `group` (one each today; preferred first).
    pub fn versions(&self, group: &str) -> Vec<&'static str> {
        let mut versions: Vec<&'static str> = Vec::new();
        for e in self.entries.iter().filter(|e| e.group == group) {
            if !versions.contains(&e.version) {
                versions.push(e.version);
            }
        }
        versions
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ResourceInfo>> {
        self.entries.iter().filter(move |e| e.group == group && e.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issue_listed_resource_is_served() {
        let reg = Registry::builtin();
        for (group, plural) in [
            ("", "namespaces"),
            ("", "pods"),
            ("", "services"),
            ("", "endpoints"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "nodes"),
            ("", "events"),
            ("", "serviceaccounts"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "daemonsets"),
            ("apps", "statefulsets"),
            ("apps", "controllerrevisions"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("storage.k8s.io", "storageclasses"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("coordination.k8s.io", "leases"),
            ("discovery.k8s.io", "endpointslices"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "ingressclasses"),
            ("scheduling.k8s.io", "priorityclasses"),
        ] {
            assert!(reg.by_plural(group, plural).is_some(), "{group}/{plural} missing");
        }
    }

    #[test]
    fn keys_follow_the_registry_layout() {
        let reg = Registry::builtin();
        let pods = reg.by_plural("", "pods").expect("pods");
        assert_eq!(pods.key("default", "web"), "/registry/pods/default/web");
        assert_eq!(pods.list_prefix(""), "/registry/pods/");
        assert_eq!(pods.list_prefix("kube-system"), "/registry/pods/kube-system/");
        let nodes = reg.by_plural("", "nodes").expect("nodes");
        assert!(!nodes.namespaced);
        assert_eq!(nodes.key("ignored", "n1"), "/registry/nodes/n1");
        let slices = reg.by_plural("discovery.k8s.io", "endpointslices").expect("slices");
        assert_eq!(slices.key("default", "s"), "/registry/endpointslices/default/s");
    }

    #[test]
    fn plurals_are_unique_because_keys_do_not_carry_the_group() {
        let reg = Registry::builtin();
        let mut seen = std::collections::BTreeSet::new();
        // Computed kinds (reviews, metrics.k8s.io) are never stored, so they may share a plural;
        // so may a second form of stored objects, which means the same objects by intent.
        for e in reg.all().iter().filter(|e| !e.ephemeral && e.stored_as.is_none()) {
            assert!(seen.insert(e.plural), "{} served twice", e.plural);
        }
        let v1 = reg.by_plural("events.k8s.io", "events").expect("events.k8s.io");
        assert_eq!(v1.key_prefix(), reg.by_plural("", "events").expect("core events").key_prefix());
    }

    #[test]
    fn scope_comes_from_the_type() {
        let reg = Registry::builtin();
        assert!(!reg.by_plural("", "namespaces").expect("ns").namespaced);
        assert!(reg.by_plural("apps", "deployments").expect("deploy").namespaced);
        assert_eq!(reg.by_plural("apps", "deployments").expect("deploy").singular, "deployment");
    }

    #[test]
    fn normalize_drops_unknown_fields_and_rejects_wrong_types() {
        let reg = Registry::builtin();
        let cm = reg.by_plural("", "configmaps").expect("cm");
        let out = cm
            .normalize(serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}))
            .expect("normalizes");
        assert_eq!(out["kind"], "ConfigMap");
        assert_eq!(out["apiVersion"], "v1");
        assert!(out.get("bogus").is_none());
        assert!(cm.normalize(serde_json::json!({"metadata": {"name": "a"}, "data": "nope"})).is_err());
    }
}
