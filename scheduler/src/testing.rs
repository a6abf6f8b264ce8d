//! Builders the plugin tables share.

use k8s_openapi::api::core::v1::Pod;

use crate::cache::Cache;

/// A pod in `default` with these labels and this spec (one container added).
pub fn pod(labels: serde_json::Value, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = serde_json::json!([{"name": "c"}]);
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}, "spec": spec}),
    )
    .expect("pod")
}

/// A plain pod labelled app=web.
pub fn web() -> Pod {
    pod(serde_json::json!({"app": "web"}), serde_json::json!({}))
}

/// Binds a copy of `p` with this uid to `node` in the cache.
pub fn place(c: &mut Cache, node: &str, p: &Pod, uid: String) {
    let mut p = p.clone();
    p.metadata.uid = Some(uid);
    p.spec.get_or_insert_default().node_name = Some(node.to_string());
    c.observe_pod(&p);
}
