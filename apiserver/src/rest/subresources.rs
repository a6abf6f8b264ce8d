//! Subresources that act on their parent object: `scale` (autoscaling/v1 Scale for workloads),
//! `pods/binding` (the scheduler's assignment of a pod to a node) and `pods/eviction`
//! (policy/v1 Eviction: a delete that respects PodDisruptionBudgets).

use serde_json::{Value, json};

use super::{DeleteOptions, Deleted, How, ListOptions, ParsedPatch, Store, Track, WriteOptions};
use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::resources::ResourceInfo;
use crate::selectors::{LabelSelector, Selectors};

/// `matchLabels` and `matchExpressions` as a label selector string.
pub fn selector_string(sel: &Value) -> String {
    // A ReplicationController's selector is a plain map of labels.
    if let Some(m) = sel.as_object()
        && !m.contains_key("matchLabels")
        && !m.contains_key("matchExpressions")
    {
        return m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",");
    }
    let mut parts: Vec<String> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(ml.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]) {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    parts.join(",")
}

/// The autoscaling/v1 Scale view of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let m = meta::meta(obj).cloned().unwrap_or_default();
    let pick = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj.pointer("/spec/selector").unwrap_or(&Value::Null)),
        },
    })
}

/// A change to a Scale: the whole new Scale (PUT) or a patch of the current one.
pub enum ScaleChange {
    Replace(Value),
    Patch(ParsedPatch),
}

fn condition(kind: &str, status: &str) -> Value {
    json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": meta::now()})
}

impl Store {
    pub async fn get_scale(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Value> {
        Ok(scale_of(&self.get_value(info, ns, name).await?))
    }

    /// Sets the workload's `spec.replicas` from a Scale; answers the resulting Scale.
    pub async fn update_scale(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        change: ScaleChange,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let written = self
            .update_with(info, ns, name, None, How::client(opts, "scale"), |old| {
                let current = scale_of(old);
                let desired = match &change {
                    ScaleChange::Replace(v) => v.clone(),
                    ScaleChange::Patch(p) => p.apply(&current, crate::patch::schema::Ty::Object)?,
                };
                let given_name = meta::name(&desired);
                if !given_name.is_empty() && given_name != name {
                    return Err(ApiError::BadRequest(format!(
                        "the name of the object ({given_name}) does not match the name on the URL ({name})"
                    )));
                }
                let rv = meta::meta_str(&desired, "resourceVersion");
                if !rv.is_empty() && rv != meta::meta_str(old, "resourceVersion") {
                    return Err(ApiError::stale(info, name));
                }
                let replicas = desired.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                let Some(n) = replicas.as_i64().filter(|n| *n >= 0 && *n <= i64::from(i32::MAX)) else {
                    return Err(ApiError::invalid(
                        info,
                        name,
                        vec![Cause::invalid("spec.replicas", &replicas, "must be greater than or equal to 0")],
                    ));
                };
                let mut new = old.clone();
                new["spec"]["replicas"] = json!(n);
                Ok(new)
            })
            .await?;
        Ok(scale_of(&written.object))
    }

    /// Assigns a pod to a node (the scheduler's write), once.
    pub async fn bind(
        &self,
        pods: &ResourceInfo,
        ns: &str,
        name: &str,
        binding: &Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        let given = meta::name(binding);
        if !given.is_empty() && given != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the binding ({given}) does not match the name on the URL ({name})"
            )));
        }
        let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or("");
        let kind = binding.pointer("/target/kind").and_then(Value::as_str).unwrap_or("Node");
        if node.is_empty() || !(kind.is_empty() || kind == "Node") {
            let cause = if node.is_empty() {
                Cause::required("target.name")
            } else {
                Cause::not_supported("target.kind", kind, &["Node"])
            };
            return Err(ApiError::Invalid {
                message: format!("Binding \"{name}\" is invalid: {}", cause.message),
                details: crate::error::Details { name: name.into(), kind: "Binding".into(), ..Default::default() },
                causes: vec![cause],
            });
        }
        let annotations = meta::meta(binding).and_then(|m| m.get("annotations")).and_then(Value::as_object).cloned();
        self.update_with(pods, ns, name, Some("binding"), How { dry_run, track: Track::No }, |old| {
            if meta::is_deleting(old) {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            let current = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(node);
            if let Some(a) = &annotations {
                let m = meta::meta_mut(&mut new);
                let target = m.entry("annotations").or_insert_with(|| json!({}));
                if let Some(t) = target.as_object_mut() {
                    t.extend(a.clone());
                }
            }
            let conditions = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"))
                .collect();
            conditions.push(condition("PodScheduled", "True"));
            new["status"]["conditions"] = json!(conditions);
            Ok(new)
        })
        .await
        .map(|_| ())
    }

    /// Deletes a pod unless that would take a PodDisruptionBudget below what it allows.
    pub async fn evict(
        &self,
        pods: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        dry_run: bool,
    ) -> ApiResult<()> {
        let pod = self.get_value(pods, ns, name).await?;
        let delete = DeleteOptions { dry_run: dry_run || opts.dry_run, ..opts.clone() };
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        // Pods that are done, not running yet or already going need no budget.
        let needs_budget = !matches!(phase, "Succeeded" | "Failed" | "Pending") && !meta::is_deleting(&pod);
        if needs_budget && let Some(pdbs) = self.registry.by_plural("policy", "poddisruptionbudgets").cloned() {
            self.take_disruption(&pdbs, &pod, delete.dry_run).await?;
        }
        match self.delete(pods, ns, name, &delete).await? {
            Deleted::Gone(_) | Deleted::Pending(_) => Ok(()),
        }
    }

    /// Finds the pod's budget and takes one allowed disruption from it, or refuses with 429.
    async fn take_disruption(&self, pdbs: &ResourceInfo, pod: &Value, dry_run: bool) -> ApiResult<()> {
        let ns = meta::namespace(pod);
        let listed = self.list(pdbs, ns, &ListOptions::default()).await?;
        let mut matching = Vec::new();
        for item in listed.items {
            let pdb = item.value()?;
            let Some(sel) = pdb.pointer("/spec/selector") else { continue };
            let selector = LabelSelector::parse(&selector_string(sel))?;
            // An empty selector matches nothing for a budget (policy/v1 semantics for `{}` aside).
            if !selector.is_empty() && (Selectors { labels: selector, ..Default::default() }).matches(pod) {
                matching.push(pdb);
            }
        }
        let pdb = match matching.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
            }
        };
        let pdb_name = meta::name(&pdb).to_string();
        let pod_name = meta::name(pod).to_string();
        let too_many = |why: String| ApiError::TooManyRequests {
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            causes: vec![Cause { reason: "DisruptionBudget", message: why, field: String::new() }],
        };
        let observed = pdb.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
        let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        if observed < generation {
            return Err(too_many(format!("The disruption budget {pdb_name} is still being processed by the server.")));
        }
        let written = self
            .update_with(pdbs, ns, &pdb_name, Some("status"), How { dry_run, track: Track::No }, |old| {
                let allowed = old.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
                if allowed <= 0 {
                    let expected = old.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0);
                    let healthy = old.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0);
                    return Err(too_many(format!(
                        "The disruption budget {pdb_name} needs {expected} healthy pods and has {healthy} currently"
                    )));
                }
                let mut new = old.clone();
                new["status"]["disruptionsAllowed"] = json!(allowed - 1);
                new["status"]["disruptedPods"][&pod_name] = json!(meta::now());
                Ok(new)
            })
            .await;
        written.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reports_replicas_and_the_selector_string() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "5", "creationTimestamp": "t"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}},
            "status": {"replicas": 2}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web,tier notin (db)");
        assert_eq!(s["metadata"]["resourceVersion"], "5");
        assert_eq!(s["apiVersion"], "autoscaling/v1");
    }
}
