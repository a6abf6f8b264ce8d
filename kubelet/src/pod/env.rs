//! A container's environment: service links, `env` (with `valueFrom`), `envFrom`, and `$(VAR)`
//! expansion, in upstream's order and with its rules.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, Service};

use super::source::ObjectSource;

/// Expands `$(NAME)` from `vars`; `$$` escapes a `$`; an unknown or unclosed reference stays as
/// written (upstream's `expansion.Expand`).
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        out.push_str(&input[last..i]);
                        match vars(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        last = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

/// Docker-link style variables for each Service (`FOO_SERVICE_HOST`, `FOO_PORT_80_TCP`, ...).
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default().to_uppercase().replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = &p.name
                && !pn.is_empty()
            {
                out.push((format!("{name}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")), p.port.to_string()));
            }
        }
        let proto = first.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", proto.to_lowercase(), first.port)));
        for p in &ports {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((prefix.clone(), format!("{}://{ip}:{}", proto.to_lowercase(), p.port)));
            out.push((format!("{prefix}_PROTO"), proto.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

/// What a downward-API `fieldRef` names, as text.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let meta = &pod.metadata;
    let map_text = |m: &Option<BTreeMap<String, String>>| {
        m.clone()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(key) = path.strip_prefix("metadata.labels['").and_then(|r| r.strip_suffix("']")) {
        return Ok(meta.labels.clone().unwrap_or_default().get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = path.strip_prefix("metadata.annotations['").and_then(|r| r.strip_suffix("']")) {
        return Ok(meta.annotations.clone().unwrap_or_default().get(key).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&meta.labels),
        "metadata.annotations" => map_text(&meta.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => status.host_ip.unwrap_or_default(),
        "status.hostIPs" => status.host_ips.unwrap_or_default().into_iter().map(|i| i.ip).collect::<Vec<_>>().join(","),
        "status.podIP" => status.pod_ip.unwrap_or_default(),
        "status.podIPs" => status.pod_ips.unwrap_or_default().into_iter().map(|i| i.ip).collect::<Vec<_>>().join(","),
        other => return Err(format!("unsupported fieldRef {other:?}")),
    })
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Node capacity for resource fields a container does not limit.
#[derive(Clone, Debug, Default)]
pub struct NodeAllocatable {
    pub cpu_milli: i128,
    pub memory_bytes: i128,
    pub ephemeral_storage_bytes: i128,
}

/// A `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) divided by `divisor`, rounded up.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: &NodeAllocatable,
) -> Result<String, String> {
    let res = container.resources.clone().unwrap_or_default();
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let map = match kind {
        "limits" => res.limits.unwrap_or_default(),
        "requests" => res.requests.unwrap_or_default(),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let given = map.get(name).and_then(|q| quantity::parse_milli(&q.0));
    let milli = match (given, kind, name) {
        (Some(v), _, _) => v,
        (None, "limits", "cpu") => node.cpu_milli,
        (None, "limits", "memory") => node.memory_bytes * 1000,
        (None, "limits", "ephemeral-storage") => node.ephemeral_storage_bytes * 1000,
        (None, "requests", _) => 0,
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let div = divisor.filter(|d| !d.is_empty()).and_then(quantity::parse_milli).filter(|d| *d > 0).unwrap_or(1000);
    let value = (milli + div - 1).div_euclid(div);
    Ok(value.to_string())
}

/// The environment of `container` in order, with every `valueFrom` resolved and `$(VAR)`
/// expanded. `services` are the Service-link variables (empty when `enableServiceLinks` is off,
/// except the master service's). An error names what is missing (CreateContainerConfigError).
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    services: &[(String, String)],
    node: &NodeAllocatable,
    source: &dyn ObjectSource,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let set = |k: String, v: String, order: &mut Vec<String>, values: &mut HashMap<String, String>| {
        if !values.contains_key(&k) {
            order.push(k.clone());
        }
        values.insert(k, v);
    };
    for (k, v) in services {
        set(k.clone(), v.clone(), &mut order, &mut values);
    }
    for from in container.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &from.config_map_ref {
            match source.config_map(&ns, &cm.name).await? {
                Some(c) => c.data.unwrap_or_default(),
                None if cm.optional == Some(true) => continue,
                None => return Err(format!("configmap \"{}\" not found", cm.name)),
            }
        } else if let Some(sec) = &from.secret_ref {
            match source.secret(&ns, &sec.name).await? {
                Some(d) => d.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect(),
                None if sec.optional == Some(true) => continue,
                None => return Err(format!("secret \"{}\" not found", sec.name)),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            set(format!("{prefix}{k}"), v, &mut order, &mut values);
        }
    }
    for var in container.env.clone().unwrap_or_default() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => all_containers(pod)
                        .into_iter()
                        .find(|c| c.name == n)
                        .ok_or_else(|| format!("container {n:?} not found"))?,
                    None => container.clone(),
                };
                resource_value(&target, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), node)?
            } else if let Some(k) = &from.config_map_key_ref {
                match source.config_map(&ns, &k.name).await?.map(|c| c.data.unwrap_or_default()) {
                    Some(d) => match d.get(&k.key) {
                        Some(v) => v.clone(),
                        None if k.optional == Some(true) => continue,
                        None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", k.key, k.name)),
                    },
                    None if k.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{}\" not found", k.name)),
                }
            } else if let Some(k) = &from.secret_key_ref {
                match source.secret(&ns, &k.name).await? {
                    Some(d) => match d.get(&k.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if k.optional == Some(true) => continue,
                        None => return Err(format!("couldn't find key {} in Secret {ns}/{}", k.key, k.name)),
                    },
                    None if k.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{}\" not found", k.name)),
                }
            } else {
                String::new()
            }
        } else {
            // Only variables defined before this one (and service links) expand.
            let snapshot = values.clone();
            expand(var.value.as_deref().unwrap_or(""), &|n| snapshot.get(n).cloned())
        };
        set(var.name.clone(), value, &mut order, &mut values);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = values.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// Every container of the pod: init containers first.
pub fn all_containers(pod: &Pod) -> Vec<Container> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.init_containers.unwrap_or_default().into_iter().chain(spec.containers).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::source::MapSource;

    fn vars(n: &str) -> Option<String> {
        match n {
            "A" => Some("apple".into()),
            "B" => Some("$(A)".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        assert_eq!(expand("$(A)-$(A)", &vars), "apple-apple");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(MISSING)", &vars), "$(MISSING)");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("$(B)", &vars), "$(A)");
        assert_eq!(expand("a$b$", &vars), "a$b$");
        assert_eq!(expand("$$$$", &vars), "$$");
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[tokio::test]
    async fn env_resolves_value_from_and_expands_in_order() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c", "image": "busybox",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "FIRST", "value": "one"},
                    {"name": "SECOND", "value": "$(FIRST)-two-$(LATER)"},
                    {"name": "LATER", "value": "x"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "CPULIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}}
                ]
            }]},
            "status": {"podIP": "10.244.0.5"}
        }));
        let mut source = MapSource::default();
        source.config_maps.insert(("ns".into(), "cm".into()), BTreeMap::from([("k".into(), "v".into())]));
        source.secrets.insert(("ns".into(), "s".into()), BTreeMap::from([("password".into(), b"hunter2".to_vec())]));
        let node = NodeAllocatable { cpu_milli: 2000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 0 };
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        let env = container_env(&p, &c, &[("SVC_SERVICE_HOST".into(), "10.96.0.9".into())], &node, &source)
            .await
            .expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(env[0].0, "SVC_SERVICE_HOST");
        assert_eq!(get("CM_k"), Some("v"));
        assert_eq!(get("SECOND"), Some("one-two-$(LATER)"));
        assert_eq!(get("POD"), Some("p"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("CPU"), Some("250"));
        assert_eq!(get("CPULIM"), Some("2"));
        assert_eq!(get("KEY"), Some("v"));
        assert_eq!(get("PASS"), Some("hunter2"));
        assert_eq!(get("OPT"), None);

        let mut missing = c.clone();
        missing.env = Some(vec![
            serde_json::from_value(
                serde_json::json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "absent"}}}),
            )
            .expect("var"),
        ]);
        let err = container_env(&p, &missing, &[], &node, &source).await.expect_err("missing key");
        assert_eq!(err, "couldn't find key absent in ConfigMap ns/cm");
    }

    #[test]
    fn service_links_look_like_docker_links() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-svc"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))
        .expect("svc");
        let env: HashMap<_, _> = service_env(&[svc]).into_iter().collect();
        assert_eq!(env["MY_SVC_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["MY_SVC_SERVICE_PORT"], "80");
        assert_eq!(env["MY_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_SVC_PORT"], "tcp://10.96.0.20:80");
        assert_eq!(env["MY_SVC_PORT_80_TCP_ADDR"], "10.96.0.20");
        assert_eq!(env["MY_SVC_PORT_80_TCP_PROTO"], "tcp");
    }
}
