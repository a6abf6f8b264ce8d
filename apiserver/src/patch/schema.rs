//! How lists in the served types merge: which are atomic, which are sets of primitives, and
//! which are maps keyed by some fields. Strategic merge patch and server-side apply both need it.
//!
//! Only the types on a path to a non-atomic list are named; everything else is [`Ty::Object`],
//! whose maps merge key by key and whose lists are replaced whole. The keys are the API's
//! documented merge keys (`patchMergeKey` for strategic merge; `listMapKeys` for apply, which
//! sometimes name more fields, e.g. a container port's protocol).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A struct or map with nothing special below it.
    Object,
    /// A top-level object of this kind.
    Root(&'static str),
    ObjectMeta,
    PodTemplateSpec,
    JobTemplateSpec,
    PodSpec,
    Container,
    PodStatus,
    ServiceSpec,
    /// A status whose only special field is `conditions`, keyed by `type`.
    ConditionsStatus,
    NodeSpec,
    NodeStatus,
    /// The spec of a workload that holds a pod `template`.
    TemplateSpec,
    CronJobSpec,
    /// A list item that server-side apply owns and replaces whole (an owner reference).
    AtomicItem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Replaced whole.
    Atomic,
    /// Primitive values without duplicates; a strategic patch adds to it.
    Set,
    /// Objects identified by key fields.
    Map {
        /// The strategic merge patch key.
        merge_key: &'static str,
        /// The server-side apply keys.
        keys: &'static [&'static str],
        item: Ty,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Object(Ty),
    List(List),
}

const fn map(key: &'static str, keys: &'static [&'static str], item: Ty) -> Field {
    Field::List(List::Map { merge_key: key, keys, item })
}

/// The type at the top of an object of `kind`.
pub fn root(kind: &'static str) -> Ty {
    Ty::Root(kind)
}

/// What field `name` of a value of type `ty` is.
pub fn field(ty: Ty, name: &str) -> Field {
    use Ty::*;
    match (ty, name) {
        (Root(_), "metadata") => Field::Object(ObjectMeta),
        (Root("Pod"), "spec") => Field::Object(PodSpec),
        (Root("Pod"), "status") => Field::Object(PodStatus),
        (Root("Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job"), "spec") => {
            Field::Object(TemplateSpec)
        }
        (Root("CronJob"), "spec") => Field::Object(CronJobSpec),
        (Root("Service"), "spec") => Field::Object(ServiceSpec),
        (Root("Node"), "spec") => Field::Object(NodeSpec),
        (Root("Node"), "status") => Field::Object(NodeStatus),
        (
            Root("Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" | "Service" | "Namespace"),
            "status",
        ) => Field::Object(ConditionsStatus),

        (ObjectMeta, "finalizers") => Field::List(List::Set),
        (ObjectMeta, "ownerReferences") => map("uid", &["uid"], AtomicItem),

        (TemplateSpec, "template") => Field::Object(PodTemplateSpec),
        (JobTemplateSpec, "spec") => Field::Object(TemplateSpec),
        (CronJobSpec, "jobTemplate") => Field::Object(JobTemplateSpec),
        (PodTemplateSpec | JobTemplateSpec, "metadata") => Field::Object(ObjectMeta),
        (PodTemplateSpec, "spec") => Field::Object(PodSpec),

        (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => map("name", &["name"], Container),
        (PodSpec, "volumes" | "resourceClaims" | "schedulingGates") => map("name", &["name"], Object),
        (PodSpec, "imagePullSecrets") => map("name", &["name"], AtomicItem),
        (PodSpec, "hostAliases") => map("ip", &["ip"], Object),
        (PodSpec, "topologySpreadConstraints") => map("topologyKey", &["topologyKey", "whenUnsatisfiable"], Object),

        (Container, "env") => map("name", &["name"], Object),
        (Container, "ports") => map("containerPort", &["containerPort", "protocol"], Object),
        (Container, "volumeMounts") => map("mountPath", &["mountPath"], Object),
        (Container, "volumeDevices") => map("devicePath", &["devicePath"], Object),

        (PodStatus | ConditionsStatus | NodeStatus, "conditions") => map("type", &["type"], Object),
        (PodStatus, "podIPs" | "hostIPs") => map("ip", &["ip"], Object),
        (NodeStatus, "addresses") => map("type", &["type"], Object),
        (ServiceSpec, "ports") => map("port", &["port", "protocol"], Object),
        (NodeSpec, "podCIDRs") => Field::List(List::Set),

        _ => Field::Object(Object),
    }
}

/// How server-side apply sees a field's value: owned and replaced whole, or merged below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A primitive, or an atomic struct, map or list.
    Leaf,
    /// A map merged key by key.
    Struct(Ty),
    /// A set of primitives.
    Set,
    /// A list of objects identified by `keys`.
    Assoc { keys: &'static [&'static str], item: Ty },
}

/// Fields whose types the API marks atomic wherever they appear: label selectors
/// (`structType=atomic`), a Service's selector map, and references to a single object or key.
fn atomic_field(name: &str) -> bool {
    matches!(
        name,
        "selector"
            | "labelSelector"
            | "namespaceSelector"
            | "podSelector"
            | "configMapKeyRef"
            | "secretKeyRef"
            | "fieldRef"
            | "resourceFieldRef"
            | "configMapRef"
            | "secretRef"
            | "requiredDuringSchedulingIgnoredDuringExecution"
    )
}

/// The shape of `value`, found in field `name` of a value of type `ty`.
pub fn shape(ty: Ty, name: &str, value: &serde_json::Value) -> Shape {
    use serde_json::Value;
    if atomic_field(name) {
        return Shape::Leaf;
    }
    match (value, field(ty, name)) {
        (Value::Object(_), Field::Object(t)) => Shape::Struct(t),
        (Value::Array(_), Field::List(List::Set)) => Shape::Set,
        (Value::Array(_), Field::List(List::Map { keys, item, .. })) => Shape::Assoc { keys, item },
        _ => Shape::Leaf,
    }
}

/// A key field's value when an item leaves it out (upstream's defaults for list-map keys).
pub fn key_default(name: &str) -> Option<serde_json::Value> {
    (name == "protocol").then(|| serde_json::Value::String("TCP".into()))
}

/// The list strategy of field `name` in `ty`, for a value that is a list.
pub fn list(ty: Ty, name: &str) -> List {
    match field(ty, name) {
        Field::List(l) => l,
        Field::Object(_) => List::Atomic,
    }
}

/// The type of field `name` in `ty`, for a value that is an object.
pub fn object(ty: Ty, name: &str) -> Ty {
    match field(ty, name) {
        Field::Object(t) => t,
        Field::List(_) => Ty::Object,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_found_through_every_template_path() {
        let pod = object(root("Pod"), "spec");
        assert_eq!(list(pod, "containers"), List::Map { merge_key: "name", keys: &["name"], item: Ty::Container });
        let deploy = object(object(object(root("Deployment"), "spec"), "template"), "spec");
        assert_eq!(deploy, Ty::PodSpec);
        let cron =
            object(object(object(object(object(root("CronJob"), "spec"), "jobTemplate"), "spec"), "template"), "spec");
        assert_eq!(cron, Ty::PodSpec);
        assert_eq!(
            list(Ty::Container, "ports"),
            List::Map { merge_key: "containerPort", keys: &["containerPort", "protocol"], item: Ty::Object }
        );
    }

    #[test]
    fn unknown_lists_are_atomic_and_metadata_finalizers_a_set() {
        assert_eq!(list(Ty::PodSpec, "tolerations"), List::Atomic);
        assert_eq!(list(Ty::Object, "anything"), List::Atomic);
        assert_eq!(list(object(root("ConfigMap"), "metadata"), "finalizers"), List::Set);
        assert_eq!(
            list(object(root("Namespace"), "status"), "conditions"),
            List::Map { merge_key: "type", keys: &["type"], item: Ty::Object }
        );
    }
}
