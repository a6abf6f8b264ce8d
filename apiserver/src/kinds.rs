//! Each kind's own behaviour: defaults applied on create and update, validation of required and
//! immutable fields, and which Table printer it uses.
//!
//! Everything here is a pure function of the objects given, so it is tested with plain JSON
//! tables. The generic REST code has already handled `metadata` and status carry-over when these
//! run.

use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::resources::Strategy;
use crate::table::{self, TableDef};
use crate::validation;

// ---- small JSON helpers ----

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let map = v.as_object_mut().expect("object");
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    child.as_object_mut().expect("object")
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        _ => {}
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    if cur.is_null() { None } else { Some(cur) }
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn array_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

// ---- pod specs (pods and every template) ----

/// Upstream's pod spec defaults, for pods and for templates inside workloads.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    set_default(map, "restartPolicy", json!("Always"));
    set_default(map, "terminationGracePeriodSeconds", json!(30));
    set_default(map, "dnsPolicy", json!("ClusterFirst"));
    set_default(map, "securityContext", json!({}));
    set_default(map, "schedulerName", json!("default-scheduler"));
    set_default(map, "enableServiceLinks", json!(true));
    if let Some(sa) = map.get("serviceAccountName").cloned() {
        set_default(map, "serviceAccount", sa);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = map.get_mut(list) {
            for c in cs {
                default_container(c);
            }
        }
    }
}

/// Upstream's DefaultTolerationSeconds admission: a new pod that does not tolerate its node
/// becoming not-ready or unreachable tolerates both for 300 s, so a brief node outage does not
/// evict it at once.
pub fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerated = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || (k.is_empty() && op == "Exists")) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

fn default_container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(map) = c.as_object_mut() else { return };
    set_default(map, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(map, "terminationMessagePolicy", json!("File"));
    set_default(map, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(map, "resources", json!({}));
    if let Some(Value::Array(ports)) = map.get_mut("ports") {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
    // Requests default to limits when only limits are given.
    if let Some(res) = map.get_mut("resources").and_then(Value::as_object_mut)
        && let Some(limits) = res.get("limits").and_then(Value::as_object).cloned()
    {
        let requests = res.entry("requests").or_insert_with(|| json!({}));
        if let Some(req) = requests.as_object_mut() {
            for (k, v) in limits {
                req.entry(k).or_insert(v);
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = array_at(spec, "containers");
    if containers.is_empty() {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = std::collections::BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in array_at(spec, list).iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            let name = str_at(c, "name");
            if name.is_empty() {
                causes.push(Cause::required(format!("{p}.name")));
            } else if let Err(e) = validation::dns1123_label(name) {
                causes.push(Cause::invalid(format!("{p}.name"), name, e));
            } else if !names.insert(name.to_string()) {
                causes.push(Cause::duplicate(format!("{p}.name"), name));
            }
            if str_at(c, "image").trim().is_empty() {
                causes.push(Cause::required(format!("{p}.image")));
            }
            for (j, port) in array_at(c, "ports").iter().enumerate() {
                let cp = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&cp) {
                    causes.push(Cause::invalid(
                        format!("{p}.ports[{j}].containerPort"),
                        cp,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            let policy = str_at(c, "imagePullPolicy");
            if !policy.is_empty() && !["Always", "IfNotPresent", "Never"].contains(&policy) {
                causes.push(Cause::not_supported(
                    format!("{p}.imagePullPolicy"),
                    policy,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
    }
    if let Some(policy) = get(spec, "preemptionPolicy") {
        validate_preemption_policy(policy, &format!("{path}.preemptionPolicy"), causes);
    }
    let rp = str_at(spec, "restartPolicy");
    if !rp.is_empty() && !["Always", "OnFailure", "Never"].contains(&rp) {
        causes.push(Cause::not_supported(format!("{path}.restartPolicy"), rp, &["Always", "OnFailure", "Never"]));
    }
    let dns = str_at(spec, "dnsPolicy");
    if !dns.is_empty() && !["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"].contains(&dns) {
        causes.push(Cause::not_supported(
            format!("{path}.dnsPolicy"),
            dns,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    let mut volumes = std::collections::BTreeSet::new();
    for (i, v) in array_at(spec, "volumes").iter().enumerate() {
        let name = str_at(v, "name");
        if let Err(e) = validation::dns1123_label(name) {
            causes.push(Cause::invalid(format!("{path}.volumes[{i}].name"), name, e));
        } else if !volumes.insert(name.to_string()) {
            causes.push(Cause::duplicate(format!("{path}.volumes[{i}].name"), name));
        }
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in array_at(spec, list).iter().enumerate() {
            for (j, m) in array_at(c, "volumeMounts").iter().enumerate() {
                let name = str_at(m, "name");
                if !volumes.contains(name) {
                    causes.push(Cause {
                        reason: "FieldValueNotFound",
                        message: format!("Not found: \"{name}\""),
                        field: format!("{path}.{list}[{i}].volumeMounts[{j}].name"),
                    });
                }
            }
        }
    }
}

/// QoS class from the (defaulted) containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = array_at(spec, "containers").iter().chain(array_at(spec, "initContainers")).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let limits = get(c, "resources.limits").and_then(Value::as_object);
        let requests = get(c, "resources.requests").and_then(Value::as_object);
        let has = |m: Option<&Map<String, Value>>, k: &str| m.is_some_and(|m| m.contains_key(k));
        for r in ["cpu", "memory"] {
            if has(limits, r) || has(requests, r) {
                any = true;
            }
            let (l, q) = (limits.and_then(|m| m.get(r)), requests.and_then(|m| m.get(r)));
            if l.is_none() || (q.is_some() && q != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---- namespaces ----

pub struct NamespaceStrategy;
impl Strategy for NamespaceStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let name = crate::meta::name(obj).to_string();
        let spec = obj_mut(obj, "spec");
        let fins = spec.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = fins.as_array_mut()
            && !list.iter().any(|f| f == "kubernetes")
        {
            list.push(json!("kubernetes"));
        }
        obj["status"] = json!({"phase": "Active"});
        set_name_label(obj, &name);
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // Finalizers only change through /finalize.
        let fins = get(old, "spec.finalizers").cloned().unwrap_or_else(|| json!([]));
        obj_mut(new, "spec").insert("finalizers".into(), fins);
        let name = crate::meta::name(old).to_string();
        set_name_label(new, &name);
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::NAMESPACE)
    }
}

fn set_name_label(obj: &mut Value, name: &str) {
    let labels = crate::meta::meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    if let Some(l) = labels.as_object_mut() {
        l.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

// ---- pods ----

pub struct PodStrategy;
impl Strategy for PodStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_pod_spec(spec);
        }
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    /// Priority admission set these at create; an update that leaves them out keeps them (any
    /// other change to them is refused as a spec change).
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        for f in ["priority", "preemptionPolicy"] {
            if let Some(v) = get(old, &format!("spec.{f}")) {
                set_default(obj_mut(new, "spec"), f, v.clone());
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", &mut causes);
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        // Only images, activeDeadlineSeconds, tolerations and the grace period may change.
        let mask = |spec: &Value| {
            let mut s = spec.clone();
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = s.get_mut(list) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
            if let Some(m) = s.as_object_mut() {
                for f in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"] {
                    m.remove(f);
                }
            }
            s
        };
        let (n, o) = (new.get("spec").unwrap_or(&Value::Null), old.get("spec").unwrap_or(&Value::Null));
        if mask(n) != mask(o) {
            return vec![Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`",
            )];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::POD)
    }
}

// ---- services ----

pub struct ServiceStrategy;
const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// A node port of 0 means "not chosen" (Go clients, protobuf in particular, always send the field).
fn drop_unset_node_ports(spec: &mut Map<String, Value>) {
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if p.get("nodePort").is_some_and(|n| n.is_null() || n.as_i64() == Some(0)) {
                p.remove("nodePort");
            }
        }
    }
}

impl Strategy for ServiceStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        drop_unset_node_ports(spec);
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        if ty != "ExternalName" {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            }
        }
        obj["status"] = json!({"loadBalancer": {}});
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // Allocated values the client left out stay as they were, unless the new type has no use
        // for them (an ExternalName Service has no ClusterIP, a ClusterIP one no node ports).
        let ty = str_at(new, "spec.type").to_string();
        let spec = obj_mut(new, "spec");
        drop_unset_node_ports(spec);
        set_default(spec, "type", json!("ClusterIP"));
        let fields: &[&str] = if ty == "ExternalName" {
            &[]
        } else {
            &["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"]
        };
        for f in fields {
            if let Some(v) = get(old, &format!("spec.{f}")) {
                set_default(spec, f, v.clone());
            }
        }
        if !matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            // Leaving NodePort/LoadBalancer: the allocated values the client did not change go
            // with it, as upstream drops type-dependent fields (kubectl patch of the type alone).
            let old_ports = get(old, "spec.ports").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    let unchanged = old_ports.iter().any(|o| {
                        o.get("port") == p.get("port")
                            && o.get("nodePort").is_some()
                            && o.get("nodePort") == p.get("nodePort")
                    });
                    if unchanged {
                        p.remove("nodePort");
                    }
                }
            }
            for f in
                ["healthCheckNodePort", "externalTrafficPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass"]
            {
                if spec.get(f) == get(old, &format!("spec.{f}")) {
                    spec.remove(f);
                }
            }
            return;
        }
        if let (Some(Value::Array(ports)), Some(old_ports)) =
            (spec.get_mut("ports"), get(old, "spec.ports").and_then(Value::as_array))
        {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                let same =
                    old_ports.iter().find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    set_default(p, "nodePort", np.clone());
                }
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let ty = str_at(spec, "type");
        if !ty.is_empty() && !SERVICE_TYPES.contains(&ty) {
            causes.push(Cause::not_supported("spec.type", ty, SERVICE_TYPES));
        }
        let ports = array_at(spec, "ports");
        if ty == "ExternalName" {
            if str_at(spec, "externalName").is_empty() {
                causes.push(Cause::required("spec.externalName"));
            }
        } else if ports.is_empty() && str_at(spec, "clusterIP") != "None" {
            causes.push(Cause::required("spec.ports"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].port"),
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            let proto = str_at(p, "protocol");
            if !proto.is_empty() && !PROTOCOLS.contains(&proto) {
                causes.push(Cause::not_supported(format!("spec.ports[{i}].protocol"), proto, PROTOCOLS));
            }
            let name = str_at(p, "name");
            if ports.len() > 1 && name.is_empty() {
                causes.push(Cause::required(format!("spec.ports[{i}].name")));
            } else if !name.is_empty() {
                if let Err(e) = validation::dns1123_label(name) {
                    causes.push(Cause::invalid(format!("spec.ports[{i}].name"), name, e));
                } else if !names.insert(name.to_string()) {
                    causes.push(Cause::duplicate(format!("spec.ports[{i}].name"), name));
                }
            }
        }
        for (i, p) in ports.iter().enumerate() {
            if p.get("nodePort").is_some_and(|n| !n.is_null()) && !matches!(ty, "NodePort" | "LoadBalancer") {
                let shown = if ty.is_empty() { "ClusterIP" } else { ty };
                causes.push(Cause::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    format!("may not be used when `type` is '{shown}'"),
                ));
            }
        }
        if ty == "ExternalName" && !str_at(spec, "clusterIP").is_empty() {
            causes.push(Cause::forbidden("spec.clusterIP", "may not be set when `type` is 'ExternalName'"));
        }
        let session = str_at(spec, "sessionAffinity");
        if !session.is_empty() && !["None", "ClientIP"].contains(&session) {
            causes.push(Cause::not_supported("spec.sessionAffinity", session, &["ClientIP", "None"]));
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let (n, o) = (str_at(new, "spec.clusterIP"), str_at(old, "spec.clusterIP"));
        let to_external_name = str_at(new, "spec.type") == "ExternalName";
        if !o.is_empty() && n != o && !to_external_name {
            return vec![Cause::immutable("spec.clusterIP", n)];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::SERVICE)
    }
}

// ---- configmaps and secrets ----

fn validate_data_keys(obj: &Value, fields: &[&str], causes: &mut Vec<Cause>) {
    let mut seen = std::collections::BTreeSet::new();
    for f in fields {
        if let Some(m) = obj.get(*f).and_then(Value::as_object) {
            for k in m.keys() {
                if let Err(e) = validation::config_map_key(k) {
                    causes.push(Cause::invalid(format!("{f}[{k}]"), k, e));
                }
                if !seen.insert(k.clone()) {
                    causes.push(Cause::invalid(
                        format!("{f}[{k}]"),
                        k,
                        "duplicate of key present in another data field",
                    ));
                }
            }
        }
    }
}

fn validate_immutable_data(new: &Value, old: &Value, fields: &[&str]) -> Vec<Cause> {
    let mut causes = Vec::new();
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            causes.push(Cause::forbidden("immutable", "field is immutable when `immutable` is set"));
        }
        for f in fields {
            if new.get(*f) != old.get(*f) {
                causes.push(Cause::forbidden(*f, "field is immutable when `immutable` is set"));
            }
        }
    }
    causes
}

/// ConfigMaps and Secrets hold at most 1 MiB of data.
const MAX_DATA_BYTES: usize = 1024 * 1024;

fn data_size(obj: &Value, fields: &[&str]) -> usize {
    fields
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .flat_map(|m| m.iter())
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum()
}

pub struct ConfigMapStrategy;
impl Strategy for ConfigMapStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_data_keys(obj, &["data", "binaryData"], &mut causes);
        if data_size(obj, &["data", "binaryData"]) > MAX_DATA_BYTES {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
                field: "data".into(),
            });
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        validate_immutable_data(new, old, &["data", "binaryData"])
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::CONFIG_MAP)
    }
}

pub struct SecretStrategy;

/// `stringData` is write-only: its entries are folded into `data` (base64) on every write.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v.as_str().unwrap_or("").to_string();
            d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}

const SECRET_REQUIRED_KEYS: &[(&str, &[&str])] = &[
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
];

impl Strategy for SecretStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        fold_string_data(obj);
        if let Some(map) = obj.as_object_mut() {
            set_default(map, "type", json!("Opaque"));
        }
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        fold_string_data(new);
        if let Some(map) = new.as_object_mut()
            && let Some(t) = old.get("type")
        {
            set_default(map, "type", t.clone());
        }
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_data_keys(obj, &["data"], &mut causes);
        if data_size(obj, &["data"]) > MAX_DATA_BYTES * 4 / 3 + 4 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
                field: "data".into(),
            });
        }
        let ty = str_at(obj, "type");
        if let Some((_, keys)) = SECRET_REQUIRED_KEYS.iter().find(|(t, _)| *t == ty) {
            for k in *keys {
                if get(obj, "data").and_then(|d| d.get(*k)).is_none() {
                    causes.push(Cause::required(format!("data[{k}]")));
                }
            }
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = validate_immutable_data(new, old, &["data"]);
        if str_at(new, "type") != str_at(old, "type") {
            causes.push(Cause::immutable("type", str_at(new, "type")));
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::SECRET)
    }
}

// ---- nodes, events, and the plain kinds with their printers ----

pub struct NodeStrategy;
impl Strategy for NodeStrategy {
    fn keeps_status_on_create(&self) -> bool {
        true
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let (n, o) = (str_at(new, "spec.podCIDR"), str_at(old, "spec.podCIDR"));
        if !o.is_empty() && n != o {
            return vec![Cause::forbidden(
                "spec.podCIDR",
                "node updates may not change podCIDR except from \"\" to valid",
            )];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::NODE)
    }
}

pub struct EventStrategy;
impl Strategy for EventStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let ns = crate::meta::namespace(obj);
        let involved_ns = str_at(obj, "involvedObject.namespace");
        if !involved_ns.is_empty() && involved_ns != ns {
            causes.push(Cause::invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"));
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::EVENT)
    }
}

macro_rules! printer_only {
    ($name:ident, $table:expr) => {
        pub struct $name;
        impl Strategy for $name {
            fn table(&self) -> Option<&'static TableDef> {
                Some(&$table)
            }
        }
    };
}

printer_only!(EndpointsStrategy, table::ENDPOINTS);
printer_only!(ServiceAccountStrategy, table::SERVICE_ACCOUNT);
printer_only!(LeaseStrategy, table::LEASE);
printer_only!(IngressStrategy, table::INGRESS);

/// Upstream's `maxLenIngressClassController`.
const INGRESS_CLASS_CONTROLLER_MAX: usize = 250;
const INGRESS_CLASS_SCOPES: &[&str] = &["Cluster", "Namespace"];

/// networking.k8s.io/v1 IngressClasses: `spec.controller` names the ingress controller that
/// implements the class, a domain-prefixed path required at creation and fixed afterwards
/// (controllers pick their classes by it; changing it would hand live Ingresses to another
/// controller). Parameters default to cluster scope, as upstream's `SetDefaults_IngressClass`.
pub struct IngressClassStrategy;
impl Strategy for IngressClassStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(params) = obj.pointer_mut("/spec/parameters").and_then(Value::as_object_mut) {
            set_default(params, "scope", json!("Cluster"));
        }
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let controller = str_at(obj, "spec.controller");
        if controller.len() > INGRESS_CLASS_CONTROLLER_MAX {
            causes.push(Cause::invalid(
                "spec.controller",
                controller,
                format!("must have at most {INGRESS_CLASS_CONTROLLER_MAX} bytes"),
            ));
        }
        if let Err(why) = domain_prefixed_path(controller) {
            causes.push(why.into_cause("spec.controller", controller));
        }
        if let Some(params) = get(obj, "spec.parameters") {
            validate_ingress_class_parameters(params, &mut causes);
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let controller = str_at(new, "spec.controller");
        if controller != str_at(old, "spec.controller") {
            return vec![Cause::immutable("spec.controller", controller)];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::INGRESS_CLASS)
    }
}

/// Why a value is not a domain-prefixed path.
enum PathProblem {
    Missing,
    Invalid(&'static str),
}

impl PathProblem {
    fn into_cause(self, field: &str, value: &str) -> Cause {
        match self {
            PathProblem::Missing => Cause::required(field),
            PathProblem::Invalid(why) => Cause::invalid(field, value, why),
        }
    }
}

/// Upstream's `IsDomainPrefixedPath`: `<DNS-1123 subdomain>/<path>` with an HTTP-path body.
fn domain_prefixed_path(s: &str) -> Result<(), PathProblem> {
    if s.is_empty() {
        return Err(PathProblem::Missing);
    }
    let Some((host, path)) = s.split_once('/').filter(|(h, p)| !h.is_empty() && !p.is_empty()) else {
        return Err(PathProblem::Invalid("must be a domain-prefixed path (such as \"acme.io/foo\")"));
    };
    if validation::dns1123_subdomain(host).is_err() {
        return Err(PathProblem::Invalid("must be a domain-prefixed path (such as \"acme.io/foo\")"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c);
    if !path.chars().all(allowed) {
        return Err(PathProblem::Invalid("must be a valid HTTP path"));
    }
    Ok(())
}

/// Upstream's `validateIngressClassParametersReference`: kind and name required, scope
/// `Cluster` (no namespace) or `Namespace` (with one).
fn validate_ingress_class_parameters(params: &Value, causes: &mut Vec<Cause>) {
    const FIELD: &str = "spec.parameters";
    for f in ["kind", "name"] {
        if str_at(params, f).is_empty() {
            causes.push(Cause::required(format!("{FIELD}.{f}")));
        }
    }
    let group = str_at(params, "apiGroup");
    if !group.is_empty()
        && let Err(why) = validation::dns1123_subdomain(group)
    {
        causes.push(Cause::invalid(format!("{FIELD}.apiGroup"), group, why));
    }
    let scope = str_at(params, "scope");
    let namespace = str_at(params, "namespace");
    match scope {
        "Cluster" if !namespace.is_empty() => {
            causes.push(Cause::forbidden(format!("{FIELD}.namespace"), "`parameters.scope` is set to 'Cluster'"))
        }
        "Namespace" if namespace.is_empty() => causes.push(Cause::required(format!("{FIELD}.namespace"))),
        "Namespace" => {
            if let Err(why) = validation::dns1123_label(namespace) {
                causes.push(Cause::invalid(format!("{FIELD}.namespace"), namespace, why));
            }
        }
        "Cluster" => {}
        "" => causes.push(Cause::required(format!("{FIELD}.scope"))),
        other => causes.push(Cause::not_supported(format!("{FIELD}.scope"), other, INGRESS_CLASS_SCOPES)),
    }
}

/// autoscaling/v2 HorizontalPodAutoscalers: minReplicas 1 and, with no metrics, 80 % CPU
/// utilization, as upstream defaults them.
pub struct HorizontalPodAutoscalerStrategy;
impl Strategy for HorizontalPodAutoscalerStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "minReplicas", json!(1));
        if spec.get("metrics").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        for f in ["kind", "name"] {
            if str_at(obj, &format!("spec.scaleTargetRef.{f}")).is_empty() {
                causes.push(Cause::required(format!("spec.scaleTargetRef.{f}")));
            }
        }
        let max = get(obj, "spec.maxReplicas").and_then(Value::as_i64).unwrap_or(0);
        let min = get(obj, "spec.minReplicas").and_then(Value::as_i64).unwrap_or(1);
        if max < 1 {
            causes.push(Cause::invalid("spec.maxReplicas", max.to_string(), "must be greater than or equal to 1"));
        } else if min > max {
            causes.push(Cause::invalid(
                "spec.maxReplicas",
                max.to_string(),
                "must be greater than or equal to `minReplicas`",
            ));
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::HORIZONTAL_POD_AUTOSCALER)
    }
}

pub struct PodDisruptionBudgetStrategy;
impl Strategy for PodDisruptionBudgetStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() {
            return vec![Cause::invalid("spec", "", "minAvailable and maxUnavailable cannot be both set")];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::POD_DISRUPTION_BUDGET)
    }
}

pub struct EndpointSliceStrategy;
const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
impl Strategy for EndpointSliceStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let at = str_at(obj, "addressType");
        if at.is_empty() {
            causes.push(Cause::required("addressType"));
        } else if !ADDRESS_TYPES.contains(&at) {
            causes.push(Cause::not_supported("addressType", at, ADDRESS_TYPES));
        }
        for (i, e) in array_at(obj, "endpoints").iter().enumerate() {
            if array_at(e, "addresses").is_empty() {
                causes.push(Cause::required(format!("endpoints[{i}].addresses")));
            }
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        if str_at(new, "addressType") != str_at(old, "addressType") {
            return vec![Cause::immutable("addressType", str_at(new, "addressType"))];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::ENDPOINT_SLICE)
    }
}

// ---- priority classes ----

/// `system-` names are reserved for the built-in classes.
pub const SYSTEM_PRIORITY_CLASS_PREFIX: &str = "system-";
/// The highest value a class other than the built-in ones may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// What a pod gets when it names no class and no class is the global default.
pub const DEFAULT_PRIORITY: i64 = 0;
pub const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";
const PREEMPTION_POLICIES: &[&str] = &[PREEMPT_LOWER_PRIORITY, "Never"];

/// A PriorityClass the apiserver creates at startup and never lets go.
pub struct SystemPriorityClass {
    pub name: &'static str,
    pub value: i64,
    pub description: &'static str,
}

/// As upstream: node-critical pods outrank cluster-critical ones, and both outrank every class a
/// user can define.
pub const SYSTEM_PRIORITY_CLASSES: &[SystemPriorityClass] = &[
    SystemPriorityClass {
        name: "system-node-critical",
        value: 2_000_001_000,
        description: "For system pods that must keep running on the node they are on.",
    },
    SystemPriorityClass {
        name: "system-cluster-critical",
        value: 2_000_000_000,
        description: "For system pods the cluster needs running, though they may move to another node.",
    },
];

pub fn is_system_priority_class(name: &str) -> bool {
    SYSTEM_PRIORITY_CLASSES.iter().any(|c| c.name == name)
}

fn validate_preemption_policy(policy: &Value, field: &str, causes: &mut Vec<Cause>) {
    match policy.as_str().unwrap_or("") {
        "" => causes.push(Cause::required(field)),
        p if PREEMPTION_POLICIES.contains(&p) => {}
        p => causes.push(Cause::not_supported(field, p, PREEMPTION_POLICIES)),
    }
}

/// Why a `system-` class may not be created as given, if it may not.
fn system_class_problem(name: &str, value: i64, global_default: bool) -> Option<String> {
    let Some(known) = SYSTEM_PRIORITY_CLASSES.iter().find(|c| c.name == name) else {
        return Some(format!("{name} is not a known system priority class"));
    };
    if known.value != value {
        return Some(format!("value of {name} PriorityClass must be {}", known.value));
    }
    if global_default {
        return Some(format!("globalDefault of {name} PriorityClass must be false"));
    }
    None
}

/// PriorityClasses: `value` and `preemptionPolicy` are fixed at creation, since pods copied them
/// when they were admitted. The one-global-default rule needs the other classes, so it is
/// checked where storage is at hand (`rest::priority`).
pub struct PriorityClassStrategy;
impl Strategy for PriorityClassStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            set_default(map, "preemptionPolicy", json!(PREEMPT_LOWER_PRIORITY));
        }
    }
    /// Defaulted on update too, so an update that leaves the field out is checked against the
    /// stored policy as upstream does (and refused if that was `Never`).
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let name = crate::meta::name(obj);
        let value = get(obj, "value").and_then(Value::as_i64).unwrap_or(0);
        if name.starts_with(SYSTEM_PRIORITY_CLASS_PREFIX) {
            let global_default = get(obj, "globalDefault").and_then(Value::as_bool).unwrap_or(false);
            if let Some(why) = system_class_problem(name, value, global_default) {
                causes.push(Cause::forbidden(
                    "metadata.name",
                    format!(
                        "priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' prefix are reserved for system use only. error: {why}"
                    ),
                ));
            }
        } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
            causes.push(Cause::forbidden(
                "value",
                format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
            ));
        }
        if let Some(policy) = get(obj, "preemptionPolicy") {
            validate_preemption_policy(policy, "preemptionPolicy", &mut causes);
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        if get(new, "value") != get(old, "value") {
            causes.push(Cause::forbidden("value", "may not be changed in an update."));
        }
        if get(new, "preemptionPolicy") != get(old, "preemptionPolicy") {
            causes.push(Cause::immutable("preemptionPolicy", str_at(new, "preemptionPolicy")));
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::PRIORITY_CLASS)
    }
}

// ---- workloads ----

/// Selector present, non-empty, and matching the template's labels.
fn validate_selector_and_template(obj: &Value, causes: &mut Vec<Cause>) {
    let selector = get(obj, "spec.selector");
    let match_labels = selector.and_then(|s| s.get("matchLabels")).and_then(Value::as_object);
    let exprs = selector.map(|s| array_at(s, "matchExpressions")).unwrap_or(&[]);
    if selector.is_none() {
        causes.push(Cause::required("spec.selector"));
    } else if match_labels.is_none_or(Map::is_empty) && exprs.is_empty() {
        causes.push(Cause::invalid("spec.selector", "{}", "empty selector is invalid for deployment"));
    }
    let template_labels = get(obj, "spec.template.metadata.labels").and_then(Value::as_object);
    if let Some(ml) = match_labels {
        let matches = ml.iter().all(|(k, v)| template_labels.and_then(|t| t.get(k)) == Some(v));
        if !matches {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                crate::meta::field_value(obj, "spec.template.metadata.labels"),
                "`selector` does not match template `labels`",
            ));
        }
    }
    match get(obj, "spec.template.spec") {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", causes),
        None => causes.push(Cause::required("spec.template.spec.containers")),
    }
    if let Some(r) = get(obj, "spec.replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(Cause::invalid("spec.replicas", r, "must be greater than or equal to 0"));
    }
}

fn selector_immutable(new: &Value, old: &Value) -> Vec<Cause> {
    if get(new, "spec.selector") != get(old, "spec.selector") {
        return vec![Cause::immutable("spec.selector", crate::meta::field_value(new, "spec.selector"))];
    }
    Vec::new()
}

/// `<field>.type` defaults to RollingUpdate, and then `<field>.rollingUpdate` gets `defaults`.
fn default_rolling_update(spec: &mut Map<String, Value>, field: &str, defaults: &[(&str, Value)]) {
    let strategy = spec.entry(field).or_insert_with(|| json!({}));
    let Some(strategy) = strategy.as_object_mut() else { return };
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) != Some("RollingUpdate") {
        return;
    }
    let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
    if let Some(rolling) = rolling.as_object_mut() {
        for (k, v) in defaults {
            set_default(rolling, k, v.clone());
        }
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(|s| s.get_mut("template")).and_then(|t| t.get_mut("spec")) {
        default_pod_spec(spec);
    }
}

/// core/v1 ReplicationControllers: replicas 1, and a selector and labels taken from the
/// template's labels when left out, as upstream defaults them.
pub struct ReplicationControllerStrategy;
impl Strategy for ReplicationControllerStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let labels = get(obj, "spec.template.metadata.labels").cloned();
        if let Some(labels) = labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
            let spec = obj_mut(obj, "spec");
            if spec.get("selector").and_then(Value::as_object).is_none_or(Map::is_empty) {
                spec.insert("selector".into(), labels.clone());
            }
            let meta = obj_mut(obj, "metadata");
            if meta.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty) {
                meta.insert("labels".into(), labels);
            }
        }
        set_default(obj_mut(obj, "spec"), "replicas", json!(1));
        default_template(obj);
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let selector = get(obj, "spec.selector").and_then(Value::as_object);
        if selector.is_none_or(Map::is_empty) {
            causes.push(Cause::required("spec.selector"));
        }
        let template_labels = get(obj, "spec.template.metadata.labels").and_then(Value::as_object);
        if let Some(sel) = selector
            && !sel.iter().all(|(k, v)| template_labels.and_then(|t| t.get(k)) == Some(v))
        {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                crate::meta::field_value(obj, "spec.template.metadata.labels"),
                "`selector` does not match template `labels`",
            ));
        }
        if let Some(spec) = get(obj, "spec.template.spec") {
            validate_pod_spec(spec, "spec.template.spec", &mut causes);
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::REPLICATION_CONTROLLER)
    }
}

pub struct DeploymentStrategy;
impl Strategy for DeploymentStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        default_rolling_update(spec, "strategy", &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))]);
        default_template(obj);
    }
    /// Updates get the same defaults: kubectl apply may leave defaulted fields out.
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_selector_and_template(obj, &mut causes);
        let st = str_at(obj, "spec.strategy.type");
        if !st.is_empty() && !["RollingUpdate", "Recreate"].contains(&st) {
            causes.push(Cause::not_supported("spec.strategy.type", st, &["Recreate", "RollingUpdate"]));
        }
        if st == "Recreate" && get(obj, "spec.strategy.rollingUpdate").is_some() {
            causes.push(Cause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        selector_immutable(new, old)
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::DEPLOYMENT)
    }
}

pub struct ReplicaSetStrategy;
impl Strategy for ReplicaSetStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        set_default(obj_mut(obj, "spec"), "replicas", json!(1));
        default_template(obj);
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_selector_and_template(obj, &mut causes);
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        selector_immutable(new, old)
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::REPLICA_SET)
    }
}

pub struct DaemonSetStrategy;
impl Strategy for DaemonSetStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "revisionHistoryLimit", json!(10));
        default_rolling_update(spec, "updateStrategy", &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))]);
        default_template(obj);
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_selector_and_template(obj, &mut causes);
        let rp = str_at(obj, "spec.template.spec.restartPolicy");
        if !rp.is_empty() && rp != "Always" {
            causes.push(Cause::not_supported("spec.template.spec.restartPolicy", rp, &["Always"]));
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        selector_immutable(new, old)
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::DAEMON_SET)
    }
}

pub struct StatefulSetStrategy;
impl Strategy for StatefulSetStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        default_rolling_update(spec, "updateStrategy", &[("partition", json!(0))]);
        default_template(obj);
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_selector_and_template(obj, &mut causes);
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = selector_immutable(new, old);
        for f in ["serviceName", "podManagementPolicy", "volumeClaimTemplates"] {
            if get(new, &format!("spec.{f}")) != get(old, &format!("spec.{f}")) {
                causes.push(Cause::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
                break;
            }
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::STATEFUL_SET)
    }
}

/// apps/v1 ControllerRevisions: an immutable snapshot (`data`) of a DaemonSet's or StatefulSet's
/// template at a revision number.
pub struct ControllerRevisionStrategy;
impl Strategy for ControllerRevisionStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        match obj.get("revision").and_then(Value::as_i64) {
            Some(r) if r < 0 => vec![Cause::invalid("revision", r, "must be greater than or equal to 0")],
            _ => Vec::new(),
        }
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        if new.get("data") != old.get("data") {
            return vec![Cause::immutable("data", crate::meta::field_value(new, "data"))];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::CONTROLLER_REVISION)
    }
}

const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

fn validate_access_modes(obj: &Value, path: &str, causes: &mut Vec<Cause>) {
    let modes = array_at(obj, path);
    if modes.is_empty() {
        causes.push(Cause::required(path));
    }
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            causes.push(Cause::not_supported(path, m, ACCESS_MODES));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m.as_str() == Some("ReadWriteOncePod")) {
        causes.push(Cause::forbidden(path, "may not use ReadWriteOncePod with other access modes"));
    }
}

fn validate_storage_quantity(obj: &Value, path: &str, causes: &mut Vec<Cause>) {
    match get(obj, path) {
        None => causes.push(Cause::required(path)),
        Some(v) => {
            let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            match quantity::parse_units(&text) {
                Some(n) if n > 0 => {}
                Some(_) => causes.push(Cause::invalid(path, &text, "must be greater than zero")),
                None => causes.push(Cause::invalid(
                    path,
                    &text,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
            }
        }
    }
}

/// The volume sources a PersistentVolume may name, as upstream lists them.
const PV_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// core/v1 PersistentVolumes: reclaim policy Retain and volume mode Filesystem by default; a
/// new volume is `Pending` until the binder makes it `Available`.
pub struct PersistentVolumeStrategy;
impl Strategy for PersistentVolumeStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
        obj_mut(obj, "status").insert("phase".into(), json!("Pending"));
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        let spec = obj_mut(new, "spec");
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_access_modes(obj, "spec.accessModes", &mut causes);
        validate_storage_quantity(obj, "spec.capacity.storage", &mut causes);
        let sources: Vec<&str> =
            PV_SOURCES.iter().copied().filter(|s| get(obj, &format!("spec.{s}")).is_some()).collect();
        match sources.len() {
            0 => causes.push(Cause {
                message: "Required value: must specify a volume type".into(),
                ..Cause::required("spec")
            }),
            1 => {}
            _ => {
                causes.push(Cause::forbidden(format!("spec.{}", sources[1]), "may not specify more than 1 volume type"))
            }
        }
        if let Some(p) = get(obj, "spec.hostPath.path").and_then(Value::as_str)
            && p.split('/').any(|seg| seg == "..")
        {
            causes.push(Cause::invalid("spec.hostPath.path", p, "must not contain '..'"));
        }
        if get(obj, "spec.local").is_some() && get(obj, "spec.nodeAffinity").is_none() {
            causes.push(Cause {
                message: "Required value: Local volume requires node affinity".into(),
                ..Cause::required("spec.nodeAffinity")
            });
        }
        let policy = str_at(obj, "spec.persistentVolumeReclaimPolicy");
        const POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
        if !policy.is_empty() && !POLICIES.contains(&policy) {
            causes.push(Cause::not_supported("spec.persistentVolumeReclaimPolicy", policy, POLICIES));
        }
        let mode = str_at(obj, "spec.volumeMode");
        if !mode.is_empty() && !VOLUME_MODES.contains(&mode) {
            causes.push(Cause::not_supported("spec.volumeMode", mode, VOLUME_MODES));
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        for f in PV_SOURCES.iter().map(|s| format!("spec.{s}")).chain(["spec.volumeMode".to_string()]) {
            if get(old, &f).is_some() && get(new, &f) != get(old, &f) {
                causes.push(Cause::immutable(&f, crate::meta::field_value(new, &f)));
            }
        }
        if get(old, "spec.nodeAffinity").is_some() && get(new, "spec.nodeAffinity") != get(old, "spec.nodeAffinity") {
            causes.push(Cause::immutable("spec.nodeAffinity", crate::meta::field_value(new, "spec.nodeAffinity")));
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::PERSISTENT_VOLUME)
    }
}

/// core/v1 PersistentVolumeClaims: volume mode Filesystem by default, `Pending` until bound.
/// Once created, only the storage request (expansion) and, while unbound, the volume name may
/// change.
pub struct PersistentVolumeClaimStrategy;
impl Strategy for PersistentVolumeClaimStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        set_default(obj_mut(obj, "spec"), "volumeMode", json!("Filesystem"));
        obj_mut(obj, "status").insert("phase".into(), json!("Pending"));
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        set_default(obj_mut(new, "spec"), "volumeMode", json!("Filesystem"));
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_access_modes(obj, "spec.accessModes", &mut causes);
        validate_storage_quantity(obj, "spec.resources.requests.storage", &mut causes);
        let mode = str_at(obj, "spec.volumeMode");
        if !mode.is_empty() && !VOLUME_MODES.contains(&mode) {
            causes.push(Cause::not_supported("spec.volumeMode", mode, VOLUME_MODES));
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let strip = |o: &Value| {
            let mut spec = o.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec.as_object_mut() {
                m.remove("resources");
                if o.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").is_empty() {
                    m.remove("volumeName");
                }
                m.remove("volumeAttributesClassName");
            }
            spec
        };
        let (mut new_spec, old_spec) = (strip(new), strip(old));
        // A volume name may be set on an unbound claim (the binder does), not changed after.
        if old.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").is_empty()
            && let Some(m) = new_spec.as_object_mut()
        {
            m.remove("volumeName");
        }
        if new_spec != old_spec {
            return vec![Cause::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            )];
        }
        Vec::new()
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::PERSISTENT_VOLUME_CLAIM)
    }
}

/// storage.k8s.io/v1 StorageClasses: reclaim policy Delete and binding mode Immediate by
/// default; provisioner and parameters are fixed once created.
pub struct StorageClassStrategy;
impl Strategy for StorageClassStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let m = obj.as_object_mut();
        if let Some(m) = m {
            set_default(m, "reclaimPolicy", json!("Delete"));
            set_default(m, "volumeBindingMode", json!("Immediate"));
        }
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        if str_at(obj, "provisioner").is_empty() {
            causes.push(Cause::required("provisioner"));
        }
        let mode = str_at(obj, "volumeBindingMode");
        const MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
        if !mode.is_empty() && !MODES.contains(&mode) {
            causes.push(Cause::not_supported("volumeBindingMode", mode, MODES));
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        for f in ["provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"] {
            if new.get(f) != old.get(f) {
                causes.push(Cause::forbidden(f, "updates to ".to_string() + f + " are forbidden."));
            }
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::STORAGE_CLASS)
    }
}

pub struct JobStrategy;

const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

impl Strategy for JobStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let uid = crate::meta::uid(obj).to_string();
        let name = crate::meta::name(obj).to_string();
        let manual = get(obj, "spec.manualSelector").and_then(Value::as_bool) == Some(true);
        let spec = obj_mut(obj, "spec");
        let (completions, parallelism) = (spec.get("completions").cloned(), spec.get("parallelism").cloned());
        if completions.is_none() && parallelism.is_none() {
            spec.insert("completions".into(), json!(1));
        }
        set_default(spec, "parallelism", json!(1));
        set_default(spec, "backoffLimit", json!(6));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
        if !manual {
            // The selector is generated from the Job's own uid, so it can only ever match its pods.
            spec.insert("selector".into(), json!({"matchLabels": {JOB_UID_LABEL: uid}}));
            let template = spec.entry("template").or_insert_with(|| json!({}));
            let labels = obj_mut(template, "metadata").entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(JOB_UID_LABEL.into(), json!(uid));
                l.insert(JOB_NAME_LABEL.into(), json!(name));
                l.insert("controller-uid".into(), json!(uid));
                l.insert("job-name".into(), json!(name));
            }
        }
        if let Some(spec) = obj.get_mut("spec").and_then(|s| s.get_mut("template")).and_then(|t| t.get_mut("spec")) {
            let had_policy = spec.get("restartPolicy").is_some();
            default_pod_spec(spec);
            if !had_policy && let Some(m) = spec.as_object_mut() {
                // Let validation say what is wrong instead of silently picking Always.
                m.remove("restartPolicy");
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        match get(obj, "spec.template.spec") {
            Some(spec) => validate_pod_spec(spec, "spec.template.spec", &mut causes),
            None => causes.push(Cause::required("spec.template.spec.containers")),
        }
        let rp = str_at(obj, "spec.template.spec.restartPolicy");
        if !["OnFailure", "Never"].contains(&rp) {
            causes.push(Cause::not_supported("spec.template.spec.restartPolicy", rp, &["OnFailure", "Never"]));
        }
        for f in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"] {
            if let Some(v) = get(obj, &format!("spec.{f}")).and_then(Value::as_i64)
                && v < 0
            {
                causes.push(Cause::invalid(format!("spec.{f}"), v, "must be greater than or equal to 0"));
            }
        }
        causes
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = selector_immutable(new, old);
        for f in ["completionMode", "podFailurePolicy"] {
            if get(new, &format!("spec.{f}")) != get(old, &format!("spec.{f}")) {
                causes.push(Cause::immutable(format!("spec.{f}"), crate::meta::field_value(new, &format!("spec.{f}"))));
            }
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::JOB)
    }
}

pub struct CronJobStrategy;
impl Strategy for CronJobStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
    }
    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        self.prepare_for_create(new);
    }
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        if str_at(obj, "spec.schedule").trim().is_empty() {
            causes.push(Cause::required("spec.schedule"));
        }
        let cp = str_at(obj, "spec.concurrencyPolicy");
        if !cp.is_empty() && !["Allow", "Forbid", "Replace"].contains(&cp) {
            causes.push(Cause::not_supported("spec.concurrencyPolicy", cp, &["Allow", "Forbid", "Replace"]));
        }
        match get(obj, "spec.jobTemplate.spec.template.spec") {
            Some(spec) => validate_pod_spec(spec, "spec.jobTemplate.spec.template.spec", &mut causes),
            None => causes.push(Cause::required("spec.jobTemplate.spec.template.spec.containers")),
        }
        causes
    }
    fn table(&self) -> Option<&'static TableDef> {
        Some(&table::CRON_JOB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(image_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn pods_get_defaults_status_and_qos() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "busybox",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        PodStrategy.prepare_for_create(&mut pod);
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "Guaranteed"}));
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"]["cpu"], "1");
        let mut best = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        PodStrategy.prepare_for_create(&mut best);
        assert_eq!(best["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn pod_validation_names_each_broken_field() {
        let pod = json!({"spec": {"containers": [{"name": "A"}, {"name": "b", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], "restartPolicy": "Sometimes"}});
        let fields: Vec<String> = PodStrategy.validate(&pod).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.restartPolicy",
                "spec.containers[1].volumeMounts[0].name"
            ]
        );
        assert_eq!(PodStrategy.validate(&json!({"spec": {}}))[0].field, "spec.containers");
    }

    #[test]
    fn pod_spec_is_immutable_except_images() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        assert!(PodStrategy.validate_update(&image, &old).is_empty());
        let other = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}]}});
        assert_eq!(PodStrategy.validate_update(&other, &old)[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn pod_updates_keep_the_priority_admission_gave() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "priority": 1000, "preemptionPolicy": "Never"}});
        let mut new = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        PodStrategy.prepare_for_update(&mut new, &old);
        assert_eq!((&new["spec"]["priority"], &new["spec"]["preemptionPolicy"]), (&json!(1000), &json!("Never")));
        assert!(PodStrategy.validate_update(&new, &old).is_empty());
        let mut changed = new.clone();
        changed["spec"]["priority"] = json!(5);
        PodStrategy.prepare_for_update(&mut changed, &old);
        assert_eq!(PodStrategy.validate_update(&changed, &old)[0].field, "spec");
    }

    #[test]
    fn pod_preemption_policy_must_be_a_known_one() {
        let pod = |p: &str| json!({"spec": {"containers": [{"name": "a", "image": "x"}], "preemptionPolicy": p}});
        assert!(PodStrategy.validate(&pod("Never")).is_empty());
        let causes = PodStrategy.validate(&pod("Sometimes"));
        assert_eq!((causes[0].field.as_str(), causes[0].reason), ("spec.preemptionPolicy", "FieldValueNotSupported"));
    }

    fn priority_class(name: &str, value: i64) -> Value {
        let mut pc = json!({"metadata": {"name": name}, "value": value});
        PriorityClassStrategy.prepare_for_create(&mut pc);
        pc
    }

    #[test]
    fn priority_classes_default_to_preempting_lower_priorities() {
        assert_eq!(priority_class("high", 1000)["preemptionPolicy"], "PreemptLowerPriority");
        let mut never = json!({"metadata": {"name": "n"}, "value": 1, "preemptionPolicy": "Never"});
        PriorityClassStrategy.prepare_for_create(&mut never);
        assert_eq!(never["preemptionPolicy"], "Never");
        assert!(PriorityClassStrategy.validate(&never).is_empty());
    }

    #[test]
    fn priority_class_validation_reserves_high_values_and_system_names() {
        let fields = |pc: &Value| -> Vec<(String, &'static str)> {
            PriorityClassStrategy.validate(pc).into_iter().map(|c| (c.field, c.reason)).collect()
        };
        assert!(fields(&priority_class("ok", HIGHEST_USER_DEFINABLE_PRIORITY)).is_empty());
        assert!(fields(&priority_class("negative", -10)).is_empty());
        assert_eq!(
            fields(&priority_class("too-high", HIGHEST_USER_DEFINABLE_PRIORITY + 1)),
            [("value".to_string(), "FieldValueForbidden")]
        );
        for sys in SYSTEM_PRIORITY_CLASSES {
            assert!(fields(&priority_class(sys.name, sys.value)).is_empty(), "{}", sys.name);
        }
        let wrong_value = PriorityClassStrategy.validate(&priority_class("system-node-critical", 5));
        assert_eq!(wrong_value[0].field, "metadata.name");
        assert!(wrong_value[0].message.contains("value of system-node-critical PriorityClass must be 2000001000"));
        let unknown = PriorityClassStrategy.validate(&priority_class("system-mine", 5));
        assert!(unknown[0].message.contains("reserved for system use only"), "{}", unknown[0].message);
        let mut default = priority_class("system-cluster-critical", 2_000_000_000);
        default["globalDefault"] = json!(true);
        assert_eq!(fields(&default), [("metadata.name".to_string(), "FieldValueForbidden")]);
        let mut bad = priority_class("p", 1);
        bad["preemptionPolicy"] = json!("Sometimes");
        assert_eq!(fields(&bad), [("preemptionPolicy".to_string(), "FieldValueNotSupported")]);
        bad["preemptionPolicy"] = json!("");
        assert_eq!(fields(&bad), [("preemptionPolicy".to_string(), "FieldValueRequired")]);
    }

    #[test]
    fn priority_class_value_and_policy_are_fixed_but_the_rest_may_change() {
        let old = priority_class("high", 1000);
        let mut described = old.clone();
        described["description"] = json!("now described");
        described["globalDefault"] = json!(true);
        assert!(PriorityClassStrategy.validate_update(&described, &old).is_empty());
        let mut value = old.clone();
        value["value"] = json!(2000);
        let causes = PriorityClassStrategy.validate_update(&value, &old);
        assert_eq!(
            (causes[0].field.as_str(), causes[0].message.as_str()),
            ("value", "Forbidden: may not be changed in an update.")
        );
        let mut policy = json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        PriorityClassStrategy.prepare_for_update(&mut policy, &old);
        let causes = PriorityClassStrategy.validate_update(&policy, &old);
        assert_eq!(
            (causes[0].field.as_str(), causes[0].message.as_str()),
            ("preemptionPolicy", "Invalid value: \"Never\": field is immutable")
        );
        let mut left_out = json!({"metadata": {"name": "high"}, "value": 1000});
        PriorityClassStrategy.prepare_for_update(&mut left_out, &old);
        assert!(PriorityClassStrategy.validate_update(&left_out, &old).is_empty(), "a left-out policy is defaulted");
    }

    #[test]
    fn namespaces_get_the_kubernetes_finalizer_and_name_label() {
        let mut ns = json!({"metadata": {"name": "team-a", "labels": {"x": "y"}}});
        NamespaceStrategy.prepare_for_create(&mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"], json!({"x": "y", "kubernetes.io/metadata.name": "team-a"}));
        let mut update = json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": []}});
        NamespaceStrategy.prepare_for_update(&mut update, &ns);
        assert_eq!(update["spec"]["finalizers"], json!(["kubernetes"]));
    }

    #[test]
    fn a_service_leaving_node_port_drops_the_node_ports_it_did_not_change() {
        let old = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}]}});
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        new["spec"]["ports"][1]["nodePort"] = json!(30444);
        ServiceStrategy.prepare_for_update(&mut new, &old);
        assert_eq!(new["spec"]["ports"][0].get("nodePort"), None);
        assert_eq!(new["spec"]["ports"][1]["nodePort"], 30444, "a changed node port stays for validation to refuse");
        assert_eq!(new["spec"].get("externalTrafficPolicy"), None);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
    }

    #[test]
    fn services_default_and_validate_ports() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        ServiceStrategy.prepare_for_create(&mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert!(ServiceStrategy.validate(&svc).is_empty());
        let bad = json!({"spec": {"ports": [{"port": 0}, {"port": 81, "protocol": "HTTP"}]}});
        let fields: Vec<String> = ServiceStrategy.validate(&bad).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec!["spec.ports[0].port", "spec.ports[0].name", "spec.ports[1].protocol", "spec.ports[1].name"]
        );
        assert_eq!(ServiceStrategy.validate(&json!({"spec": {}}))[0].field, "spec.ports");
    }

    #[test]
    fn secrets_fold_string_data_and_keep_their_type() {
        let mut s = json!({"stringData": {"user": "admin"}, "data": {"a": "Yg=="}});
        SecretStrategy.prepare_for_create(&mut s);
        assert_eq!(s["data"], json!({"a": "Yg==", "user": "YWRtaW4="}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
        let mut changed = s.clone();
        changed["type"] = json!("kubernetes.io/tls");
        assert_eq!(SecretStrategy.validate_update(&changed, &s).last().map(|c| c.field.as_str()), Some("type"));
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(SecretStrategy.validate(&tls)[0].field, "data[tls.key]");
    }

    #[test]
    fn immutable_config_maps_refuse_changes() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(ConfigMapStrategy.validate_update(&new, &old)[0].field, "data");
        assert!(ConfigMapStrategy.validate_update(&old, &old).is_empty());
        let unset = json!({"data": {"a": "1"}});
        assert_eq!(ConfigMapStrategy.validate_update(&unset, &old)[0].field, "immutable");
    }

    #[test]
    fn deployments_default_and_require_a_matching_selector() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "n", "image": "nginx"}]}}}});
        DeploymentStrategy.prepare_for_create(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert!(DeploymentStrategy.validate(&d).is_empty());
        let mut mismatch = d.clone();
        mismatch["spec"]["template"]["metadata"]["labels"]["app"] = json!("db");
        assert_eq!(DeploymentStrategy.validate(&mismatch)[0].field, "spec.template.metadata.labels");
        let mut moved = d.clone();
        moved["spec"]["selector"]["matchLabels"]["app"] = json!("db");
        assert_eq!(DeploymentStrategy.validate_update(&moved, &d)[0].field, "spec.selector");
    }

    #[test]
    fn daemonsets_and_statefulsets_default_their_update_strategies() {
        let mut ds = json!({"spec": {}});
        DaemonSetStrategy.prepare_for_create(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let mut on_delete = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        DaemonSetStrategy.prepare_for_create(&mut on_delete);
        assert_eq!(on_delete["spec"]["updateStrategy"], json!({"type": "OnDelete"}), "no rollingUpdate for OnDelete");
        let mut sts = json!({"spec": {}});
        StatefulSetStrategy.prepare_for_create(&mut sts);
        assert_eq!(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    }

    #[test]
    fn jobs_get_a_selector_from_their_uid() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
        JobStrategy.prepare_for_create(&mut j);
        assert_eq!(j["spec"]["selector"]["matchLabels"][JOB_UID_LABEL], "u-1");
        assert_eq!(j["spec"]["template"]["metadata"]["labels"][JOB_NAME_LABEL], "pi");
        assert_eq!(j["spec"]["completions"], 1);
        assert!(JobStrategy.validate(&j).is_empty());
        let mut always = json!({"metadata": {"name": "pi", "uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        JobStrategy.prepare_for_create(&mut always);
        assert_eq!(JobStrategy.validate(&always)[0].field, "spec.template.spec.restartPolicy");
    }
}

#[cfg(test)]
mod ingress_class_tests {
    use super::*;

    fn class(controller: &str) -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"controller": controller}})
    }

    fn fields(causes: &[Cause]) -> Vec<(&str, &str)> {
        causes.iter().map(|c| (c.field.as_str(), c.reason)).collect()
    }

    #[test]
    fn an_ingress_class_needs_a_domain_prefixed_controller() {
        assert!(IngressClassStrategy.validate(&class("example.com/ingress-nginx")).is_empty());
        for (controller, reason) in [
            ("", "FieldValueRequired"),
            ("nginx", "FieldValueInvalid"),
            ("Example.com/x", "FieldValueInvalid"),
            ("example.com/", "FieldValueInvalid"),
            ("example.com/a b", "FieldValueInvalid"),
        ] {
            let causes = IngressClassStrategy.validate(&class(controller));
            assert_eq!(fields(&causes), [("spec.controller", reason)], "{controller:?}");
        }
        let long = format!("example.com/{}", "a".repeat(250));
        assert_eq!(fields(&IngressClassStrategy.validate(&class(&long))), [("spec.controller", "FieldValueInvalid")]);
        let missing = json!({"metadata": {"name": "c"}, "spec": {}});
        assert_eq!(fields(&IngressClassStrategy.validate(&missing)), [("spec.controller", "FieldValueRequired")]);
    }

    #[test]
    fn an_ingress_class_controller_is_immutable_but_parameters_may_change() {
        let old = class("example.com/a");
        let causes = IngressClassStrategy.validate_update(&class("example.com/b"), &old);
        assert_eq!(fields(&causes), [("spec.controller", "FieldValueInvalid")]);
        assert!(causes[0].message.contains("field is immutable"));
        let mut with_params = class("example.com/a");
        with_params["spec"]["parameters"] = json!({"kind": "Config", "name": "p"});
        assert!(IngressClassStrategy.validate_update(&with_params, &old).is_empty());
    }

    #[test]
    fn ingress_class_parameters_default_to_cluster_scope_and_need_a_namespace_only_when_namespaced() {
        let mut c = class("example.com/a");
        c["spec"]["parameters"] = json!({"apiGroup": "k8s.example.com", "kind": "Config", "name": "p"});
        IngressClassStrategy.prepare_for_create(&mut c);
        assert_eq!(c["spec"]["parameters"]["scope"], "Cluster");
        assert!(IngressClassStrategy.validate(&c).is_empty());
        let mut no_params = class("example.com/a");
        IngressClassStrategy.prepare_for_create(&mut no_params);
        assert!(no_params["spec"].get("parameters").is_none(), "no parameters are invented");
        for (params, want) in [
            (
                json!({"kind": "Config", "name": "p", "scope": "Cluster", "namespace": "x"}),
                ("spec.parameters.namespace", "FieldValueForbidden"),
            ),
            (
                json!({"kind": "Config", "name": "p", "scope": "Namespace"}),
                ("spec.parameters.namespace", "FieldValueRequired"),
            ),
            (
                json!({"kind": "Config", "name": "p", "scope": "Galaxy"}),
                ("spec.parameters.scope", "FieldValueNotSupported"),
            ),
            (json!({"name": "p", "scope": "Cluster"}), ("spec.parameters.kind", "FieldValueRequired")),
        ] {
            let mut c = class("example.com/a");
            c["spec"]["parameters"] = params.clone();
            assert_eq!(fields(&IngressClassStrategy.validate(&c)), [want], "{params}");
        }
        let mut namespaced = class("example.com/a");
        namespaced["spec"]["parameters"] =
            json!({"kind": "Config", "name": "p", "scope": "Namespace", "namespace": "ns"});
        assert!(IngressClassStrategy.validate(&namespaced).is_empty());
    }
}

#[cfg(test)]
mod toleration_tests {
    use super::*;

    #[test]
    fn new_pods_tolerate_a_node_outage_for_five_minutes_unless_they_say_otherwise() {
        let mut pod = json!({"spec": {"containers": [{"name": "c"}]}});
        default_toleration_seconds(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().expect("tolerations").clone();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        );
        assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");
        let mut own = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        default_toleration_seconds(&mut own);
        let t = own["spec"]["tolerations"].as_array().expect("tolerations");
        assert_eq!(t.len(), 2, "its own unreachable toleration stays, not-ready is added");
        assert_eq!(t[0]["tolerationSeconds"], 5);
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().expect("t").len(), 1, "tolerating everything covers both");
    }
}
