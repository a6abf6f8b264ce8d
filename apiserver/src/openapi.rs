//! OpenAPI v3 documents generated from the resource table: the index at `/openapi/v3` and one
//! document per group-version with every path, its operations and parameters.
//!
//! What kubectl needs from them (`kubectl create -f` and `apply` with the default
//! `--validate=strict`): each PATCH operation names its kind in
//! `x-kubernetes-group-version-kind` and takes a `fieldValidation` parameter, which tells kubectl
//! to leave validation to the server; the server then rejects unknown and duplicate fields.
//! Component schemas are only named here, not spelled out (see the README's limits).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::resources::{Registry, ResourceInfo};

/// The `api/v1` / `apis/<group>/<version>` keys of the index, with their documents.
pub struct OpenApiV3 {
    docs: BTreeMap<String, (String, Value)>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn schema_name(r: &ResourceInfo) -> String {
    let group = match r.group {
        "" => "core".to_string(),
        g => g.split('.').next().unwrap_or(g).to_string(),
    };
    format!("io.k8s.api.{group}.{}.{}", r.version, r.kind)
}

fn gvk(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn operation(r: &ResourceInfo, action: &str, op_id: &str, params: Vec<Value>, body: bool) -> Value {
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    let mut op = json!({
        "operationId": op_id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
    });
    if body {
        let content_types: &[&str] = if action == "patch" {
            &["application/json-patch+json", "application/merge-patch+json"]
        } else {
            &["application/json", "application/yaml"]
        };
        let content: serde_json::Map<String, Value> =
            content_types.iter().map(|ct| (ct.to_string(), json!({"schema": {"type": "object"}}))).collect();
        op["requestBody"] = json!({"required": true, "content": content});
    }
    op
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "string", "When present, modifications are not persisted. Valid value: All."),
        param("fieldManager", "string", "A name associated with the actor making these changes."),
        param("fieldValidation", "string", "How to treat unknown and duplicate fields: Ignore, Warn or Strict."),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        param("allowWatchBookmarks", "boolean", "Request watch BOOKMARK events."),
        param("continue", "string", "Token from the previous page of a paged list."),
        param("fieldSelector", "string", "Restrict the returned objects by their fields."),
        param("labelSelector", "string", "Restrict the returned objects by their labels."),
        param("limit", "integer", "Maximum number of objects to return in one page."),
        param("resourceVersion", "string", "Which version of the resource list to serve."),
        param("resourceVersionMatch", "string", "How resourceVersion applies: Exact or NotOlderThan."),
        param("sendInitialEvents", "boolean", "Start a watch with synthetic ADDED events for the current state."),
        param("timeoutSeconds", "integer", "Timeout for list and watch calls."),
        param("watch", "boolean", "Stream changes instead of listing."),
    ]
}

fn document(reg: &Registry, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in reg.in_group_version(group, version) {
        let base = format!("/{}", gv_path(group, version));
        let (collection, item) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (format!("{base}/{}", r.plural), format!("{base}/{}/{{name}}", r.plural))
        };
        let kind = r.kind;
        let has = |verb: &str| r.verbs.contains(&verb);
        let mut coll = serde_json::Map::new();
        if has("list") {
            coll.insert("get".into(), operation(r, "list", &format!("list{kind}"), list_params(), false));
        }
        if has("create") {
            coll.insert("post".into(), operation(r, "post", &format!("create{kind}"), write_params(), true));
        }
        if has("deletecollection") {
            coll.insert(
                "delete".into(),
                operation(r, "deletecollection", &format!("deleteCollection{kind}"), list_params(), false),
            );
        }
        paths.insert(collection, Value::Object(coll));
        let mut patch_params = write_params();
        patch_params.push(param("force", "boolean", "Force apply requests (server-side apply)."));
        let mut ops = serde_json::Map::new();
        if has("get") {
            ops.insert("get".into(), operation(r, "get", &format!("read{kind}"), vec![], false));
        }
        if has("update") {
            ops.insert("put".into(), operation(r, "put", &format!("replace{kind}"), write_params(), true));
        }
        if has("patch") {
            ops.insert("patch".into(), operation(r, "patch", &format!("patch{kind}"), patch_params.clone(), true));
        }
        if has("delete") {
            let params = vec![
                param("dryRun", "string", "When present, modifications are not persisted."),
                param("gracePeriodSeconds", "integer", "Seconds before the object is deleted."),
                param("propagationPolicy", "string", "Whether and how garbage collection runs."),
            ];
            ops.insert("delete".into(), operation(r, "delete", &format!("delete{kind}"), params, false));
        }
        if !ops.is_empty() {
            paths.insert(item.clone(), Value::Object(ops));
        }
        for sub in r.subresources() {
            let mut ops = serde_json::Map::new();
            for verb in sub.verbs {
                let (method, action, params) = match *verb {
                    "get" => ("get", "get", vec![]),
                    "update" => ("put", "put", write_params()),
                    "patch" => ("patch", "patch", patch_params.clone()),
                    "create" => ("post", "post", write_params()),
                    _ => continue,
                };
                let op_id = format!("{action}{kind}{}", capitalize(sub.name));
                ops.insert(method.into(), operation(r, action, &op_id, params, method != "get"));
            }
            paths.insert(format!("{item}/{}", sub.name), Value::Object(ops));
        }
        schemas.insert(
            schema_name(r),
            json!({
                "type": "object",
                "description": format!("{} ({}).", r.kind, r.api_version()),
                "x-kubernetes-group-version-kind": [gvk(r)],
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn hash_of(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

impl OpenApiV3 {
    pub fn build(reg: &Registry) -> Self {
        let mut docs = BTreeMap::new();
        for g in reg.groups() {
            for v in reg.versions(g) {
                let doc = document(reg, g, v);
                docs.insert(gv_path(g, v), (hash_of(&doc), doc));
            }
        }
        OpenApiV3 { docs }
    }

    pub fn index(&self) -> Value {
        let paths: serde_json::Map<String, Value> = self
            .docs
            .iter()
            .map(|(k, (hash, _))| (k.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={hash}")})))
            .collect();
        json!({"paths": paths})
    }

    /// The document for `api/v1` or `apis/<g>/<v>`.
    pub fn document(&self, path: &str) -> Option<&Value> {
        self.docs.get(path.trim_matches('/')).map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_the_kind_and_field_validation() {
        let api = OpenApiV3::build(&Registry::builtin());
        let index = api.index();
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps/v1 listed");
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc = api.document("apis/apps/v1").expect("doc");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
        let core = api.document("api/v1").expect("core");
        assert!(core["paths"].get("/api/v1/namespaces/{name}/finalize").is_some());
        assert!(core["paths"].get("/api/v1/nodes/{name}").is_some());
    }
}
