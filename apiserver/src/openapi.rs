//! OpenAPI v3 documents generated from the resource table: the index at `/openapi/v3` and one
//! document per group-version with every path, its operations and parameters.
//!
//! What kubectl needs from them (`kubectl create -f` and `apply` with the default
//! `--validate=strict`): each PATCH operation names its kind in
//! `x-kubernetes-group-version-kind` and takes a `fieldValidation` parameter, which tells kubectl
//! to leave validation to the server; the server then rejects unknown and duplicate fields.
//! Component schemas come from `k8s-openapi`'s JSON Schemas of the types (descriptions, types,
//! required fields), each served kind's marked with its `x-kubernetes-group-version-kind`: what
//! `kubectl explain` reads.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::resources::{Registry, ResourceInfo};

/// The `api/v1` / `apis/<group>/<version>` keys of the index, with their documents.
pub struct OpenApiV3 {
    /// Kept serialized: a megabyte of JSON text instead of several of parsed values.
    docs: BTreeMap<String, (String, bytes::Bytes)>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn schema_name(r: &ResourceInfo) -> String {
    (r.schema_name)().into_owned()
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
    let mut generator = k8s_openapi::schemars::generate::SchemaSettings::openapi3().into_generator();
    for r in reg.in_group_version(group, version) {
        (r.schema)(&mut generator);
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
    }
    let mut schemas = generator.take_definitions(true);
    for r in reg.in_group_version(group, version) {
        if let Some(Value::Object(s)) = schemas.get_mut(&schema_name(r)) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
        }
    }
    // The Rust types hold `metadata` as a plain struct, so the schemas call it required; in
    // Kubernetes it is optional on every kind.
    for s in schemas.values_mut() {
        if let Some(Value::Array(req)) = s.get_mut("required") {
            req.retain(|f| f != "metadata");
            if req.is_empty()
                && let Some(m) = s.as_object_mut()
            {
                m.remove("required");
            }
        }
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

fn hash_of(text: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016X}", h.finish())
}

impl OpenApiV3 {
    pub fn build(reg: &Registry) -> Self {
        let mut docs = BTreeMap::new();
        for g in reg.groups() {
            for v in reg.versions(g) {
                let doc = document(reg, g, v);
                let text = doc.to_string();
                docs.insert(gv_path(g, v), (hash_of(&text), bytes::Bytes::from(text)));
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

    /// The document for `api/v1` or `apis/<g>/<v>`, as JSON text.
    pub fn document(&self, path: &str) -> Option<bytes::Bytes> {
        self.docs.get(path.trim_matches('/')).map(|(_, d)| d.clone())
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
        let doc: Value = serde_json::from_slice(&api.document("apis/apps/v1").expect("doc")).expect("json");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
        let core: Value = serde_json::from_slice(&api.document("api/v1").expect("core")).expect("json");
        assert!(core["paths"].get("/api/v1/namespaces/{name}/finalize").is_some());
        assert!(core["paths"].get("/api/v1/nodes/{name}").is_some());
    }

    #[test]
    fn schemas_describe_the_types_for_kubectl_explain() {
        let start = std::time::Instant::now();
        let api = OpenApiV3::build(&Registry::builtin());
        let built = start.elapsed();
        let doc: Value = serde_json::from_slice(&api.document("apis/apps/v1").expect("doc")).expect("json");
        let schemas = &doc["components"]["schemas"];
        let d = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert!(d["description"].as_str().is_some_and(|s| s.contains("Deployment")), "{d}");
        assert!(d.get("required").is_none(), "metadata is optional: {d}");
        let spec_ref = d["properties"]["spec"]["allOf"][0]["$ref"].as_str().expect("spec ref");
        assert_eq!(spec_ref, "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec");
        let spec = &schemas["io.k8s.api.apps.v1.DeploymentSpec"];
        assert_eq!(spec["properties"]["replicas"]["type"], "integer");
        assert_eq!(spec["required"], json!(["selector", "template"]));
        // Every reference resolves inside the document.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(schemas.get(name).is_some(), "dangling reference {name}");
        }
        let total: usize = api.docs.values().map(|(_, d)| d.len()).sum();
        eprintln!("built in {built:?}, {total} bytes of JSON");
    }
}
