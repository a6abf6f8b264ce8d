//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for.
//!
//! kubectl prints the cells as given, so the columns and the way each cell is computed are
//! what users see; they follow upstream's printers column for column. `priority: 1` columns are
//! the `-o wide` ones. Every row carries the object's metadata (`PartialObjectMetadata`) so
//! `-A`, `--show-labels` and `-L` work.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::meta;
use crate::resources::ResourceInfo;

pub struct Col {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: u8,
}

const fn col(name: &'static str, description: &'static str) -> Col {
    Col { name, ty: "string", format: "", description, priority: 0 }
}
const fn int(name: &'static str, description: &'static str) -> Col {
    Col { name, ty: "integer", format: "", description, priority: 0 }
}
const fn wide(name: &'static str, description: &'static str) -> Col {
    Col { name, ty: "string", format: "", description, priority: 1 }
}
const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
const AGE: Col = col("Age", "Time since the object was created.");

/// Columns and the function computing one row's cells.
pub struct TableDef {
    pub columns: &'static [Col],
    pub row: fn(&Value, Timestamp) -> Vec<Value>,
}

pub const DEFAULT: TableDef = TableDef { columns: &[NAME, AGE], row: |o, now| vec![name(o), meta::age(o, now).into()] };

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Result<Self, crate::error::ApiError> {
        match s {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(o) => Err(crate::error::ApiError::BadRequest(format!("includeObject value {o} is not supported"))),
        }
    }
}

pub fn definition(info: &ResourceInfo) -> &'static TableDef {
    info.strategy.table().unwrap_or(&DEFAULT)
}

pub fn column_definitions(def: &TableDef) -> Value {
    def.columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

pub fn row(def: &TableDef, obj: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let cells = (def.row)(obj, now);
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A whole Table; `list_meta` is the list's metadata (resourceVersion, continue).
pub fn table(def: &TableDef, objs: &[Value], include: IncludeObject, list_meta: Value) -> Value {
    let now = Timestamp::now();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(def),
        "rows": objs.iter().map(|o| row(def, o, include, now)).collect::<Vec<_>>(),
    })
}

// ---- helpers ----

fn name(o: &Value) -> Value {
    meta::name(o).into()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut cur = v;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(x) => cur = x,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn n(v: &Value, path: &str) -> i64 {
    let mut cur = v;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    let mut cur = v;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(x) => cur = x,
            None => return &[],
        }
    }
    cur.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn or_none(s: String) -> Value {
    if s.is_empty() { "<none>".into() } else { s.into() }
}

/// `a=b,c=d` from a string map, sorted by key; `<none>` when empty.
fn map_selector(m: Option<&Value>) -> String {
    let Some(m) = m.and_then(Value::as_object) else {
        return String::new();
    };
    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
}

/// A LabelSelector (matchLabels and matchExpressions) in selector syntax.
fn label_selector(sel: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(ml.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in arr(sel, "matchExpressions") {
        let key = s(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        parts.push(match s(e, "operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    parts.join(",")
}

fn containers_and_images(pod_spec: &Value) -> (Value, Value) {
    let cs = arr(pod_spec, "containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "image")).collect();
    (names.join(",").into(), images.join(",").into())
}

fn template_spec(o: &Value) -> &Value {
    o.get("spec").and_then(|s| s.get("template")).and_then(|t| t.get("spec")).unwrap_or(&Value::Null)
}

// ---- per-kind printers ----

pub const POD: TableDef = TableDef {
    columns: &[
        NAME,
        col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "The aggregate status of the containers in this pod."),
        col(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        AGE,
        wide("IP", "IP address allocated to the pod."),
        wide("Node", "Name of the Node this pod is assigned to."),
        wide("Nominated Node", "Name of the node where the pod would run if preemption succeeds."),
        wide("Readiness Gates", "Pod readiness gates, and how many of them are true."),
    ],
    row: pod_row,
};

fn pod_row(o: &Value, now: Timestamp) -> Vec<Value> {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let status = o.get("status").unwrap_or(&Value::Null);
    let total = arr(spec, "containers").len()
        + arr(spec, "initContainers").iter().filter(|c| s(c, "restartPolicy") == "Always").count();
    let statuses = arr(status, "containerStatuses");
    let init_statuses = arr(status, "initContainerStatuses");
    let mut restarts = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut ready = 0;
    let mut note_restart = |cs: &Value| {
        restarts += n(cs, "restartCount");
        if let Some(t) = meta::parse_time(s(cs, "lastState.terminated.finishedAt")) {
            last_restart = Some(last_restart.map_or(t, |l: Timestamp| l.max(t)));
        }
    };
    let mut reason =
        if s(status, "reason").is_empty() { s(status, "phase").to_string() } else { s(status, "reason").to_string() };

    // Init containers run in order; the first one not yet done decides the status.
    let init_count = arr(spec, "initContainers").len();
    let mut initializing = false;
    for (i, cs) in init_statuses.iter().enumerate() {
        note_restart(cs);
        let sidecar = arr(spec, "initContainers")
            .iter()
            .any(|c| s(c, "name") == s(cs, "name") && s(c, "restartPolicy") == "Always");
        if sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        let term = cs.get("state").and_then(|st| st.get("terminated"));
        let waiting = cs.get("state").and_then(|st| st.get("waiting"));
        if let Some(t) = term {
            if n(t, "exitCode") == 0 {
                continue;
            }
            reason = if !s(t, "reason").is_empty() {
                format!("Init:{}", s(t, "reason"))
            } else if n(t, "signal") != 0 {
                format!("Init:Signal:{}", n(t, "signal"))
            } else {
                format!("Init:ExitCode:{}", n(t, "exitCode"))
            };
        } else if let Some(w) = waiting.filter(|w| !s(w, "reason").is_empty() && s(w, "reason") != "PodInitializing") {
            reason = format!("Init:{}", s(w, "reason"));
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for cs in statuses.iter().rev() {
            note_restart(cs);
            let state = cs.get("state").unwrap_or(&Value::Null);
            if let Some(w) = state.get("waiting").filter(|w| !s(w, "reason").is_empty()) {
                reason = s(w, "reason").to_string();
            } else if let Some(t) = state.get("terminated") {
                reason = if !s(t, "reason").is_empty() {
                    s(t, "reason").to_string()
                } else if n(t, "signal") != 0 {
                    format!("Signal:{}", n(t, "signal"))
                } else {
                    format!("ExitCode:{}", n(t, "exitCode"))
                };
            } else if state.get("running").is_some() && cs.get("ready").and_then(Value::as_bool) == Some(true) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready =
                arr(status, "conditions").iter().any(|c| s(c, "type") == "Ready" && s(c, "status") == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    } else {
        for cs in statuses {
            note_restart(cs);
        }
    }
    if meta::is_deleting(o) {
        reason = if s(status, "reason") == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => {
            format!("{restarts} ({} ago)", meta::human_duration(now.as_second() - t.as_second()))
        }
        _ => restarts.to_string(),
    };
    let gates = arr(spec, "readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let trues = gates
            .iter()
            .filter(|g| {
                arr(status, "conditions")
                    .iter()
                    .any(|c| s(c, "type") == s(g, "conditionType") && s(c, "status") == "True")
            })
            .count();
        format!("{trues}/{}", gates.len())
    };
    vec![
        name(o),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        meta::age(o, now).into(),
        or_none(s(status, "podIP").into()),
        or_none(s(spec, "nodeName").into()),
        or_none(s(status, "nominatedNodeName").into()),
        gates_cell.into(),
    ]
}

const CONTAINERS: Col = wide("Containers", "Names of each container in the template.");
const IMAGES: Col = wide("Images", "Images referenced by each container in the template.");
const SELECTOR: Col = wide("Selector", "Label selector for pods.");

pub const DEPLOYMENT: TableDef = TableDef {
    columns: &[
        NAME,
        col("Ready", "Number of the pod with ready state"),
        int(
            "Up-to-date",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        int(
            "Available",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o, now| {
        let (c, i) = containers_and_images(template_spec(o));
        vec![
            name(o),
            format!("{}/{}", n(o, "status.readyReplicas"), n(o, "spec.replicas")).into(),
            n(o, "status.updatedReplicas").into(),
            n(o, "status.availableReplicas").into(),
            meta::age(o, now).into(),
            c,
            i,
            label_selector(o.get("spec").and_then(|s| s.get("selector")).unwrap_or(&Value::Null)).into(),
        ]
    },
};

pub const REPLICA_SET: TableDef = TableDef {
    columns: &[
        NAME,
        int("Desired", "Number of desired pods."),
        int("Current", "Number of actual pods observed."),
        int("Ready", "Number of ready pods."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o, now| {
        let (c, i) = containers_and_images(template_spec(o));
        vec![
            name(o),
            n(o, "spec.replicas").into(),
            n(o, "status.replicas").into(),
            n(o, "status.readyReplicas").into(),
            meta::age(o, now).into(),
            c,
            i,
            label_selector(o.get("spec").and_then(|s| s.get("selector")).unwrap_or(&Value::Null)).into(),
        ]
    },
};

pub const REPLICATION_CONTROLLER: TableDef = TableDef {
    columns: &[
        NAME,
        int("Desired", "Number of desired pods."),
        int("Current", "Number of actual pods observed."),
        int("Ready", "Number of ready pods."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o, now| {
        let (c, i) = containers_and_images(template_spec(o));
        let selector: Vec<String> = o
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        vec![
            name(o),
            n(o, "spec.replicas").into(),
            n(o, "status.replicas").into(),
            n(o, "status.readyReplicas").into(),
            meta::age(o, now).into(),
            c,
            i,
            selector.join(",").into(),
        ]
    },
};

pub const STATEFUL_SET: TableDef = TableDef {
    columns: &[NAME, col("Ready", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES],
    row: |o, now| {
        let (c, i) = containers_and_images(template_spec(o));
        vec![
            name(o),
            format!("{}/{}", n(o, "status.readyReplicas"), n(o, "spec.replicas")).into(),
            meta::age(o, now).into(),
            c,
            i,
        ]
    },
};

pub const CONTROLLER_REVISION: TableDef = TableDef {
    columns: &[
        NAME,
        col("Controller", "Controller of the object"),
        int("Revision", "Revision of the ControllerRevision"),
        AGE,
    ],
    row: |o, now| {
        let controller = arr(o, "metadata.ownerReferences")
            .iter()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            .map(|r| {
                let group = s(r, "apiVersion").rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let kind = s(r, "kind").to_lowercase();
                let resource = if group.is_empty() { kind } else { format!("{kind}.{group}") };
                format!("{resource}/{}", s(r, "name"))
            })
            .unwrap_or_default();
        vec![name(o), or_none(controller), n(o, "revision").into(), meta::age(o, now).into()]
    },
};

/// `RWO,ROX` as kubectl abbreviates access modes.
fn access_modes(modes: &[Value]) -> Value {
    let short: Vec<&str> = modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    short.join(",").into()
}

fn quantity_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn unset(text: &str) -> Value {
    if text.is_empty() { "<unset>".into() } else { text.into() }
}

pub const PERSISTENT_VOLUME: TableDef = TableDef {
    columns: &[
        NAME,
        col("Capacity", "The storage capacity of the volume."),
        col("Access Modes", "How the volume may be mounted."),
        col("Reclaim Policy", "What happens to the volume when its claim is released."),
        col("Status", "The phase of the volume."),
        col("Claim", "The claim bound to the volume."),
        col("StorageClass", "The storage class of the volume."),
        col("VolumeAttributesClass", "The volume attributes class of the volume."),
        col("Reason", "Why the volume is in this phase."),
        AGE,
        wide("VolumeMode", "Filesystem or Block."),
    ],
    row: |o, now| {
        let claim = match (s(o, "spec.claimRef.namespace"), s(o, "spec.claimRef.name")) {
            (_, "") => String::new(),
            (ns, name) => format!("{ns}/{name}"),
        };
        vec![
            name(o),
            quantity_text(o.pointer("/spec/capacity/storage")).into(),
            access_modes(arr(o, "spec.accessModes")),
            s(o, "spec.persistentVolumeReclaimPolicy").into(),
            s(o, "status.phase").into(),
            claim.into(),
            s(o, "spec.storageClassName").into(),
            unset(s(o, "spec.volumeAttributesClassName")),
            s(o, "status.reason").into(),
            meta::age(o, now).into(),
            s(o, "spec.volumeMode").into(),
        ]
    },
};

pub const PERSISTENT_VOLUME_CLAIM: TableDef = TableDef {
    columns: &[
        NAME,
        col("Status", "The phase of the claim."),
        col("Volume", "The volume bound to the claim."),
        col("Capacity", "The storage capacity of the bound volume."),
        col("Access Modes", "How the volume may be mounted."),
        col("StorageClass", "The storage class of the claim."),
        col("VolumeAttributesClass", "The volume attributes class of the claim."),
        AGE,
        wide("VolumeMode", "Filesystem or Block."),
    ],
    row: |o, now| {
        let phase =
            if o.pointer("/metadata/deletionTimestamp").is_some() { "Terminating" } else { s(o, "status.phase") };
        vec![
            name(o),
            phase.into(),
            s(o, "spec.volumeName").into(),
            quantity_text(o.pointer("/status/capacity/storage")).into(),
            access_modes(arr(o, "status.accessModes")),
            s(o, "spec.storageClassName").into(),
            unset(s(o, "spec.volumeAttributesClassName")),
            meta::age(o, now).into(),
            s(o, "spec.volumeMode").into(),
        ]
    },
};

pub const STORAGE_CLASS: TableDef = TableDef {
    columns: &[
        NAME,
        col("Provisioner", "Indicates the type of the provisioner."),
        col("ReclaimPolicy", "Indicates the type of the reclaim policy."),
        col("VolumeBindingMode", "Indicates how PersistentVolumeClaims should be provisioned and bound."),
        Col {
            name: "AllowVolumeExpansion",
            ty: "boolean",
            format: "",
            description: "Indicates whether the storage class allow volume expand.",
            priority: 0,
        },
        AGE,
    ],
    row: |o, now| {
        let is_default = o
            .pointer("/metadata/annotations")
            .and_then(|a| {
                a.get("storageclass.kubernetes.io/is-default-class")
                    .or_else(|| a.get("storageclass.beta.kubernetes.io/is-default-class"))
            })
            .and_then(Value::as_str)
            == Some("true");
        let shown = if is_default { format!("{} (default)", meta::name(o)) } else { meta::name(o).to_string() };
        vec![
            shown.into(),
            s(o, "provisioner").into(),
            s(o, "reclaimPolicy").into(),
            s(o, "volumeBindingMode").into(),
            o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false).into(),
            meta::age(o, now).into(),
        ]
    },
};

pub const DAEMON_SET: TableDef = TableDef {
    columns: &[
        NAME,
        int("Desired", "The total number of nodes that should be running the daemon pod."),
        int("Current", "The number of nodes running at least one daemon pod and are supposed to."),
        int(
            "Ready",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
        ),
        int("Up-to-date", "The total number of nodes that are running updated daemon pod."),
        int(
            "Available",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
        ),
        col("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o, now| {
        let spec = template_spec(o);
        let (c, i) = containers_and_images(spec);
        vec![
            name(o),
            n(o, "status.desiredNumberScheduled").into(),
            n(o, "status.currentNumberScheduled").into(),
            n(o, "status.numberReady").into(),
            n(o, "status.updatedNumberScheduled").into(),
            n(o, "status.numberAvailable").into(),
            or_none(map_selector(spec.get("nodeSelector"))),
            meta::age(o, now).into(),
            c,
            i,
            label_selector(o.get("spec").and_then(|s| s.get("selector")).unwrap_or(&Value::Null)).into(),
        ]
    },
};

pub const SERVICE: TableDef = TableDef {
    columns: &[
        NAME,
        col("Type", "How the service is exposed."),
        col("Cluster-IP", "The IP address of the service inside the cluster."),
        col("External-IP", "External addresses of the service."),
        col("Port(s)", "The ports the service exposes."),
        AGE,
        wide("Selector", "Route service traffic to pods with label keys and values matching this selector."),
    ],
    row: |o, now| {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        let ty = if s(spec, "type").is_empty() { "ClusterIP" } else { s(spec, "type") };
        let external_ips: Vec<&str> = arr(spec, "externalIPs").iter().filter_map(Value::as_str).collect();
        let external = match ty {
            "ExternalName" => s(spec, "externalName").to_string(),
            "LoadBalancer" => {
                let mut ips: Vec<String> = arr(o, "status.loadBalancer.ingress")
                    .iter()
                    .map(|i| if s(i, "ip").is_empty() { s(i, "hostname").to_string() } else { s(i, "ip").to_string() })
                    .collect();
                ips.extend(external_ips.iter().map(|s| s.to_string()));
                if ips.is_empty() { "<pending>".into() } else { ips.join(",") }
            }
            _ => external_ips.join(","),
        };
        let ports: Vec<String> = arr(spec, "ports")
            .iter()
            .map(|p| {
                let proto = if s(p, "protocol").is_empty() { "TCP" } else { s(p, "protocol") };
                if n(p, "nodePort") > 0 {
                    format!("{}:{}/{proto}", n(p, "port"), n(p, "nodePort"))
                } else {
                    format!("{}/{proto}", n(p, "port"))
                }
            })
            .collect();
        vec![
            name(o),
            ty.into(),
            or_none(s(spec, "clusterIP").into()),
            or_none(external),
            or_none(ports.join(",")),
            meta::age(o, now).into(),
            or_none(map_selector(spec.get("selector"))),
        ]
    },
};

/// `a:80,b:80,c:80 + 2 more...`: at most three endpoints spelled out, as kubectl shows them.
fn format_endpoints(endpoints: &[String]) -> String {
    if endpoints.is_empty() {
        return "<none>".into();
    }
    let shown = endpoints.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if endpoints.len() > 3 { format!("{shown} + {} more...", endpoints.len() - 3) } else { shown }
}

pub const ENDPOINTS: TableDef = TableDef {
    columns: &[NAME, col("Endpoints", "Endpoints of the service."), AGE],
    row: |o, now| {
        let mut eps = Vec::new();
        for subset in arr(o, "subsets") {
            let ports = arr(subset, "ports");
            for addr in arr(subset, "addresses") {
                if ports.is_empty() {
                    eps.push(s(addr, "ip").to_string());
                }
                for p in ports {
                    eps.push(format!("{}:{}", s(addr, "ip"), n(p, "port")));
                }
            }
        }
        vec![name(o), format_endpoints(&eps).into(), meta::age(o, now).into()]
    },
};

pub const ENDPOINT_SLICE: TableDef = TableDef {
    columns: &[
        NAME,
        col("AddressType", "The type of address carried by this EndpointSlice."),
        col("Ports", "Ports of the endpoints."),
        col("Endpoints", "Addresses of the endpoints."),
        AGE,
    ],
    row: |o, now| {
        let ports: Vec<String> = arr(o, "ports").iter().map(|p| n(p, "port").to_string()).collect();
        let addrs: Vec<String> = arr(o, "endpoints")
            .iter()
            .flat_map(|e| arr(e, "addresses").iter().filter_map(Value::as_str).map(str::to_string))
            .collect();
        vec![
            name(o),
            s(o, "addressType").into(),
            if ports.is_empty() { "<unset>".into() } else { ports.join(",").into() },
            if addrs.is_empty() { "<unset>".into() } else { format_endpoints(&addrs).into() },
            meta::age(o, now).into(),
        ]
    },
};

pub const NODE: TableDef = TableDef {
    columns: &[
        NAME,
        col("Status", "The status of the node"),
        col("Roles", "The roles of the node"),
        AGE,
        col("Version", "Kubelet Version reported by the node."),
        wide("Internal-IP", "List of internal IPs for the node."),
        wide("External-IP", "List of external IPs for the node."),
        wide("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 12 (bookworm))."),
        wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        wide(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ],
    row: |o, now| {
        let status = o.get("status").unwrap_or(&Value::Null);
        let mut state = match arr(status, "conditions").iter().find(|c| s(c, "type") == "Ready").map(|c| s(c, "status"))
        {
            Some("True") => "Ready".to_string(),
            Some("False") => "NotReady".to_string(),
            _ => "Unknown".to_string(),
        };
        if o.get("spec").and_then(|s| s.get("unschedulable")).and_then(Value::as_bool) == Some(true) {
            state.push_str(",SchedulingDisabled");
        }
        let mut roles: Vec<String> = meta::labels(o)
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| {
                        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                            Some(role.to_string())
                        } else if k == "kubernetes.io/role" {
                            v.as_str().map(str::to_string)
                        } else {
                            None
                        }
                    })
                    .filter(|r| !r.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        roles.sort();
        let addr = |ty: &str| {
            or_none(
                arr(status, "addresses")
                    .iter()
                    .find(|a| s(a, "type") == ty)
                    .map(|a| s(a, "address").to_string())
                    .unwrap_or_default(),
            )
        };
        vec![
            name(o),
            state.into(),
            or_none(roles.join(",")),
            meta::age(o, now).into(),
            s(status, "nodeInfo.kubeletVersion").into(),
            addr("InternalIP"),
            addr("ExternalIP"),
            or_none(s(status, "nodeInfo.osImage").into()),
            or_none(s(status, "nodeInfo.kernelVersion").into()),
            or_none(s(status, "nodeInfo.containerRuntimeVersion").into()),
        ]
    },
};

pub const NAMESPACE: TableDef = TableDef {
    columns: &[NAME, col("Status", "The status of the namespace"), AGE],
    row: |o, now| vec![name(o), s(o, "status.phase").into(), meta::age(o, now).into()],
};

fn data_count(o: &Value) -> i64 {
    let count = |k: &str| o.get(k).and_then(Value::as_object).map_or(0, |m| m.len() as i64);
    count("data") + count("binaryData") + count("stringData")
}

pub const CONFIG_MAP: TableDef = TableDef {
    columns: &[NAME, int("Data", "Number of keys."), AGE],
    row: |o, now| vec![name(o), data_count(o).into(), meta::age(o, now).into()],
};

pub const SECRET: TableDef = TableDef {
    columns: &[NAME, col("Type", "The type of the secret"), int("Data", "The number of data items in the secret"), AGE],
    row: |o, now| vec![name(o), s(o, "type").into(), data_count(o).into(), meta::age(o, now).into()],
};

pub const SERVICE_ACCOUNT: TableDef = TableDef {
    columns: &[
        NAME,
        int(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        ),
        AGE,
    ],
    row: |o, now| vec![name(o), (arr(o, "secrets").len() as i64).into(), meta::age(o, now).into()],
};

pub const JOB: TableDef = TableDef {
    columns: &[
        NAME,
        col("Status", "Status of the job."),
        col("Completions", "The desired number of successfully finished pods the job should be run with."),
        col("Duration", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o, now| {
        let status = o.get("status").unwrap_or(&Value::Null);
        let spec = o.get("spec").unwrap_or(&Value::Null);
        let completions = match spec.get("completions").and_then(Value::as_i64) {
            Some(c) => format!("{}/{c}", n(status, "succeeded")),
            None => {
                let parallelism = spec.get("parallelism").and_then(Value::as_i64).unwrap_or(1);
                if parallelism > 1 {
                    format!("{}/1 of {parallelism}", n(status, "succeeded"))
                } else {
                    format!("{}/1", n(status, "succeeded"))
                }
            }
        };
        let cond = |t: &str| arr(status, "conditions").iter().any(|c| s(c, "type") == t && s(c, "status") == "True");
        let state = if cond("Complete") {
            "Complete"
        } else if cond("Failed") {
            "Failed"
        } else if meta::is_deleting(o) {
            "Terminating"
        } else if cond("FailureTarget") {
            "FailureTarget"
        } else if cond("SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else if cond("Suspended") {
            "Suspended"
        } else {
            "Running"
        };
        let duration = match (meta::parse_time(s(status, "startTime")), meta::parse_time(s(status, "completionTime"))) {
            (Some(start), Some(end)) => meta::human_duration(end.as_second() - start.as_second()),
            (Some(start), None) => meta::human_duration(now.as_second() - start.as_second()),
            _ => String::new(),
        };
        let (c, i) = containers_and_images(template_spec(o));
        vec![
            name(o),
            state.into(),
            completions.into(),
            duration.into(),
            meta::age(o, now).into(),
            c,
            i,
            label_selector(spec.get("selector").unwrap_or(&Value::Null)).into(),
        ]
    },
};

pub const CRON_JOB: TableDef = TableDef {
    columns: &[
        NAME,
        col("Schedule", "The schedule in Cron format."),
        col("Timezone", "The time zone name for the given schedule."),
        col("Suspend", "Whether later executions are suspended."),
        int("Active", "Number of currently running jobs."),
        col("Last Schedule", "When the job was last successfully scheduled."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o, now| {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        let job_spec = spec.get("jobTemplate").and_then(|t| t.get("spec")).unwrap_or(&Value::Null);
        let pod_spec = job_spec.get("template").and_then(|t| t.get("spec")).unwrap_or(&Value::Null);
        let (c, i) = containers_and_images(pod_spec);
        let last = s(o, "status.lastScheduleTime");
        vec![
            name(o),
            s(spec, "schedule").into(),
            or_none(s(spec, "timeZone").into()),
            spec.get("suspend").and_then(Value::as_bool).unwrap_or(false).to_string().into(),
            (arr(o, "status.active").len() as i64).into(),
            if last.is_empty() { "<none>".into() } else { meta::translate_timestamp(last, now).into() },
            meta::age(o, now).into(),
            c,
            i,
            label_selector(job_spec.get("selector").unwrap_or(&Value::Null)).into(),
        ]
    },
};

pub const EVENT: TableDef = TableDef {
    columns: &[
        col("Last Seen", "The last time this event was seen."),
        col("Type", "Type of this event (Normal, Warning)."),
        col("Reason", "Short, machine understandable reason for this event."),
        col("Object", "The object this event is about."),
        wide("Subobject", "The part of the object this event is about."),
        wide("Source", "The component reporting this event."),
        col("Message", "A description of the status of this operation."),
        wide("First Seen", "The first time this event was seen."),
        Col {
            name: "Count",
            ty: "string",
            format: "",
            description: "The number of times this event has occurred.",
            priority: 1,
        },
        Col {
            name: "Name",
            ty: "string",
            format: "name",
            description: "Name must be unique within a namespace.",
            priority: 1,
        },
    ],
    row: |o, now| {
        let involved = o.get("involvedObject").unwrap_or(&Value::Null);
        let first = if s(o, "firstTimestamp").is_empty() { s(o, "eventTime") } else { s(o, "firstTimestamp") };
        let last = if !s(o, "lastTimestamp").is_empty() {
            s(o, "lastTimestamp")
        } else if !s(o, "series.lastObservedTime").is_empty() {
            s(o, "series.lastObservedTime")
        } else {
            first
        };
        let source = if !s(o, "source.component").is_empty() {
            let host = s(o, "source.host");
            if host.is_empty() {
                s(o, "source.component").to_string()
            } else {
                format!("{}, {host}", s(o, "source.component"))
            }
        } else {
            s(o, "reportingComponent").to_string()
        };
        let count = if n(o, "series.count") > 0 { n(o, "series.count") } else { n(o, "count").max(1) };
        vec![
            meta::translate_timestamp(last, now).into(),
            s(o, "type").into(),
            s(o, "reason").into(),
            format!("{}/{}", s(involved, "kind").to_ascii_lowercase(), s(involved, "name")).into(),
            s(involved, "fieldPath").into(),
            source.into(),
            s(o, "message").trim().into(),
            meta::translate_timestamp(first, now).into(),
            count.to_string().into(),
            name(o),
        ]
    },
};

pub const LEASE: TableDef = TableDef {
    columns: &[NAME, col("Holder", "The holder of the lease."), AGE],
    row: |o, now| vec![name(o), s(o, "spec.holderIdentity").into(), meta::age(o, now).into()],
};

pub const HORIZONTAL_POD_AUTOSCALER: TableDef = TableDef {
    columns: &[
        NAME,
        col("Reference", "The scaled object: kind/name."),
        col("Targets", "Current and target value of each metric."),
        col("MinPods", "The lower limit of replicas."),
        int("MaxPods", "The upper limit of replicas."),
        int("Replicas", "The current number of replicas."),
        AGE,
    ],
    row: |o, now| {
        let target = o.pointer("/spec/scaleTargetRef").unwrap_or(&Value::Null);
        let reference = format!("{}/{}", s(target, "kind"), s(target, "name"));
        let current = o.pointer("/status/currentMetrics").and_then(Value::as_array).cloned().unwrap_or_default();
        let targets: Vec<String> = o
            .pointer("/spec/metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| s(m, "type") == "Resource")
            .map(|m| {
                let r = m.get("resource").unwrap_or(&Value::Null);
                let name = s(r, "name");
                let t = r.get("target").unwrap_or(&Value::Null);
                let now = current
                    .iter()
                    .find(|c| c.pointer("/resource/name").and_then(Value::as_str) == Some(name))
                    .and_then(|c| c.pointer("/resource/current"));
                if let Some(want) = t.get("averageUtilization").and_then(Value::as_i64) {
                    let have = now.and_then(|c| c.get("averageUtilization")).and_then(Value::as_i64);
                    format!("{name}: {}/{want}%", have.map_or("<unknown>".to_string(), |h| format!("{h}%")))
                } else {
                    let want = t.get("averageValue").and_then(Value::as_str).unwrap_or("");
                    let have = now.and_then(|c| c.get("averageValue")).and_then(Value::as_str);
                    format!("{name}: {}/{want}", have.unwrap_or("<unknown>"))
                }
            })
            .collect();
        let min =
            o.pointer("/spec/minReplicas").and_then(Value::as_i64).map_or("<unset>".to_string(), |m| m.to_string());
        vec![
            name(o),
            reference.into(),
            if targets.is_empty() { "<none>".to_string() } else { targets.join(", ") }.into(),
            min.into(),
            n(o, "spec.maxReplicas").into(),
            n(o, "status.currentReplicas").into(),
            meta::age(o, now).into(),
        ]
    },
};

pub const POD_DISRUPTION_BUDGET: TableDef = TableDef {
    columns: &[
        NAME,
        col("Min Available", "The minimum number of pods that must be available."),
        col("Max Unavailable", "The maximum number of pods that may be unavailable."),
        int("Allowed Disruptions", "The number of pod disruptions currently allowed."),
        AGE,
    ],
    row: |o, now| {
        let text = |path: &str| match o.pointer(path) {
            Some(Value::String(s)) => s.clone().into(),
            Some(Value::Number(n)) => n.to_string().into(),
            _ => Value::from("N/A"),
        };
        vec![
            name(o),
            text("/spec/minAvailable"),
            text("/spec/maxUnavailable"),
            n(o, "status.disruptionsAllowed").into(),
            meta::age(o, now).into(),
        ]
    },
};

pub const PRIORITY_CLASS: TableDef = TableDef {
    columns: &[
        NAME,
        int("Value", "The priority pods of this class get."),
        Col {
            name: "Global-Default",
            ty: "boolean",
            format: "",
            description: "Whether pods naming no class get this one.",
            priority: 0,
        },
        AGE,
        col("PreemptionPolicy", "Whether pods of this class may preempt lower-priority pods."),
    ],
    row: |o, now| {
        vec![
            name(o),
            n(o, "value").into(),
            o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false).into(),
            meta::age(o, now).into(),
            or_none(s(o, "preemptionPolicy").into()),
        ]
    },
};

pub const INGRESS: TableDef = TableDef {
    columns: &[
        NAME,
        col("Class", "The name of the IngressClass resource."),
        col("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
        col("Address", "Address is a list containing ingress points for the load-balancer"),
        col("Ports", "Ports of TLS configurations that open"),
        AGE,
    ],
    row: |o, now| {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        let hosts: Vec<&str> = arr(spec, "rules").iter().map(|r| s(r, "host")).filter(|h| !h.is_empty()).collect();
        let addrs: Vec<String> = arr(o, "status.loadBalancer.ingress")
            .iter()
            .map(|i| if s(i, "ip").is_empty() { s(i, "hostname").to_string() } else { s(i, "ip").to_string() })
            .collect();
        let ports = if arr(spec, "tls").is_empty() { "80" } else { "80, 443" };
        vec![
            name(o),
            or_none(s(spec, "ingressClassName").into()),
            if hosts.is_empty() { "*".into() } else { hosts.join(",").into() },
            addrs.join(",").into(),
            ports.into(),
            meta::age(o, now).into(),
        ]
    },
};

/// Upstream's `printIngressClass`: parameters as `Kind[.apiGroup]/name`.
pub const INGRESS_CLASS: TableDef = TableDef {
    columns: &[
        NAME,
        col("Controller", "Controller that is responsible for handling this class"),
        col("Parameters", "A reference to a resource with additional parameters"),
        AGE,
    ],
    row: |o, now| {
        let params = o.pointer("/spec/parameters").filter(|p| p.is_object());
        let shown = match params {
            None => "<none>".to_string(),
            Some(p) => {
                let group = s(p, "apiGroup");
                let kind =
                    if group.is_empty() { s(p, "kind").to_string() } else { format!("{}.{group}", s(p, "kind")) };
                format!("{kind}/{}", s(p, "name"))
            }
        };
        vec![name(o), s(o, "spec.controller").into(), shown.into(), meta::age(o, now).into()]
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T03:00:00Z".parse().expect("time")
    }

    #[test]
    fn pod_rows_show_readiness_status_and_restarts() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-22T02:56:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"finishedAt": "2026-11-22T02:59:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let cells = (POD.row)(&pod, now());
        assert_eq!(
            cells,
            vec![
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (60s ago)"),
                json!("4m"),
                json!("10.244.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pending_and_terminating_pods() {
        let pending =
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let cells = (POD.row)(&pending, now());
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "Pending");
        assert_eq!(cells[4], "<unknown>");
        let mut deleting = pending.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-22T03:00:00Z");
        assert_eq!((POD.row)(&deleting, now())[2], "Terminating");
        let init = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"running": {}}}]}});
        assert_eq!((POD.row)(&init, now())[2], "Init:0/1");
    }

    #[test]
    fn service_rows_render_ports_and_external_addresses() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"}}});
        let cells = (SERVICE.row)(&svc, now());
        assert_eq!(
            cells[1..5],
            [json!("NodePort"), json!("10.96.0.20"), json!("<none>"), json!("80:30080/TCP,53/UDP")]
        );
        assert_eq!(cells[6], "app=web");
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!((SERVICE.row)(&lb, now())[3], "<pending>");
    }

    #[test]
    fn deployment_rows_and_selectors() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let cells = (DEPLOYMENT.row)(&d, now());
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[2], 3);
        assert_eq!(cells[5], "nginx");
        assert_eq!(cells[6], "nginx:1.27");
        assert_eq!(cells[7], "app=web,tier in (a,b)");
    }

    #[test]
    fn node_rows_show_readiness_roles_and_cordon() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"},
                "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}]}});
        let cells = (NODE.row)(&node, now());
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.33.0");
        assert_eq!(cells[5], "192.168.1.5");
        assert_eq!(cells[6], "<none>");
    }

    #[test]
    fn endpoints_show_at_most_three() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "1.1.1.2"}, {"ip": "1.1.1.3"}, {"ip": "1.1.1.4"}], "ports": [{"port": 80}]}]});
        assert_eq!((ENDPOINTS.row)(&ep, now())[1], "1.1.1.1:80,1.1.1.2:80,1.1.1.3:80 + 1 more...");
    }

    #[test]
    fn priority_class_rows_show_value_default_and_policy() {
        let pc = json!({"metadata": {"name": "high", "creationTimestamp": "2026-11-22T02:00:00Z"}, "value": 1000,
            "globalDefault": true, "preemptionPolicy": "Never"});
        assert_eq!(
            (PRIORITY_CLASS.row)(&pc, now()),
            vec![json!("high"), json!(1000), json!(true), json!("60m"), json!("Never")]
        );
        let names: Vec<&str> = PRIORITY_CLASS.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]);
    }

    #[test]
    fn ingress_class_rows_show_the_controller_and_parameters() {
        let ic = json!({"metadata": {"name": "nginx", "creationTimestamp": "2026-11-22T02:00:00Z"},
            "spec": {"controller": "example.com/nginx", "parameters": {"apiGroup": "k8s.example.com", "kind": "Config", "name": "p"}}});
        assert_eq!(
            (INGRESS_CLASS.row)(&ic, now()),
            vec![json!("nginx"), json!("example.com/nginx"), json!("Config.k8s.example.com/p"), json!("60m")]
        );
        let core = json!({"metadata": {"name": "c"}, "spec": {"controller": "x.io/c", "parameters": {"kind": "ConfigMap", "name": "m"}}});
        assert_eq!((INGRESS_CLASS.row)(&core, now())[2], "ConfigMap/m");
        let bare = json!({"metadata": {"name": "c"}, "spec": {"controller": "x.io/c"}});
        assert_eq!((INGRESS_CLASS.row)(&bare, now())[2], "<none>");
        let names: Vec<&str> = INGRESS_CLASS.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Controller", "Parameters", "Age"]);
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        let empty = json!({"metadata": {"name": "x"}});
        for def in [
            &DEFAULT,
            &POD,
            &DEPLOYMENT,
            &REPLICA_SET,
            &STATEFUL_SET,
            &DAEMON_SET,
            &SERVICE,
            &ENDPOINTS,
            &ENDPOINT_SLICE,
            &NODE,
            &NAMESPACE,
            &CONFIG_MAP,
            &SECRET,
            &SERVICE_ACCOUNT,
            &JOB,
            &CRON_JOB,
            &EVENT,
            &LEASE,
            &INGRESS,
            &INGRESS_CLASS,
            &POD_DISRUPTION_BUDGET,
            &HORIZONTAL_POD_AUTOSCALER,
            &REPLICATION_CONTROLLER,
            &PRIORITY_CLASS,
        ] {
            assert_eq!((def.row)(&empty, now()).len(), def.columns.len());
        }
    }
}
