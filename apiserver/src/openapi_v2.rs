//! OpenAPI v2 (`/openapi/v2`), in JSON and in the gnostic protobuf encoding kubectl 1.27 and
//! 1.28 ask for (Accept `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`; the
//! answer's Content-Type spells it `.v1.0`, since Go's MIME parser rejects the `@`).
//!
//! Those kubectl versions read it to decide whether the server validates fields itself: they
//! look for the PATCH operation of the object's kind (`x-kubernetes-group-version-kind`) and its
//! `fieldValidation` query parameter. The document lists every path and operation. It carries no
//! `definitions`: with a kind's definition present, kubectl would compute strategic merge patches
//! from it instead of from its compiled-in merge keys.
//!
//! The protobuf encoder writes only the fields this document uses, with the field numbers of
//! gnostic's `openapiv2/OpenAPIv2.proto` (message `openapi.v2.Document`).

use serde_json::{Map, Value, json};

use crate::resources::{Registry, ResourceInfo};

pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"in": "query", "name": name, "type": ty, "uniqueItems": true, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"in": "path", "name": name, "type": "string", "required": true, "uniqueItems": true, "description": description})
}

fn body(description: &str) -> Value {
    json!({"in": "body", "name": "body", "required": true, "description": description, "schema": {"type": "object"}})
}

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "string", "When present, modifications are not persisted. Valid value: All."),
        query("fieldManager", "string", "A name associated with the actor making these changes."),
        query("fieldValidation", "string", "How to treat unknown and duplicate fields: Ignore, Warn or Strict."),
    ]
}

fn gvk_map(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn operation(r: &ResourceInfo, action: &str, id: String, mut params: Vec<Value>, with_body: bool) -> Value {
    if with_body {
        params.push(body("The object."));
    }
    let consumes: &[&str] = if action == "patch" {
        &["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"]
    } else {
        &["*/*"]
    };
    json!({
        "operationId": id,
        "consumes": consumes,
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk_map(r),
    })
}

/// The whole v2 document as JSON.
pub fn document(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for r in reg.all() {
        let base = if r.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", r.group, r.version) };
        let (collection, item, ns_param) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
                vec![path_param("namespace", "object name and auth scope, such as for teams and projects")],
            )
        } else {
            (format!("{base}/{}", r.plural), format!("{base}/{}/{{name}}", r.plural), vec![])
        };
        let k = r.kind;
        let mut item_params = ns_param.clone();
        item_params.push(path_param("name", &format!("name of the {k}")));
        let list_params = vec![
            query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels."),
            query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields."),
            query("limit", "integer", "Maximum number of responses to return for a list call."),
            query("continue", "string", "The continue option from a previous paged list."),
            query("resourceVersion", "string", "Which version of the resource to serve."),
            query("watch", "boolean", "Watch for changes instead of listing."),
        ];
        let has = |verb: &str| r.verbs.contains(&verb);
        let mut coll = Map::new();
        if has("list") {
            coll.insert("get".into(), operation(r, "list", format!("list{k}"), list_params.clone(), false));
        }
        if has("create") {
            coll.insert("post".into(), operation(r, "post", format!("create{k}"), write_params(), true));
        }
        if has("deletecollection") {
            coll.insert(
                "delete".into(),
                operation(r, "deletecollection", format!("deleteCollection{k}"), list_params, false),
            );
        }
        if !ns_param.is_empty() {
            coll.insert("parameters".into(), json!(ns_param));
        }
        paths.insert(collection, Value::Object(coll));
        let mut patch_params = write_params();
        patch_params.push(query("force", "boolean", "Force apply requests."));
        let delete_params = vec![
            query("dryRun", "string", "When present, modifications are not persisted."),
            query("gracePeriodSeconds", "integer", "Seconds before the object should be deleted."),
            query("propagationPolicy", "string", "Whether and how garbage collection runs."),
        ];
        let mut ops = Map::new();
        if has("get") {
            ops.insert("get".into(), operation(r, "get", format!("read{k}"), vec![], false));
        }
        if has("update") {
            ops.insert("put".into(), operation(r, "put", format!("replace{k}"), write_params(), true));
        }
        if has("patch") {
            ops.insert("patch".into(), operation(r, "patch", format!("patch{k}"), patch_params.clone(), true));
        }
        if has("delete") {
            ops.insert("delete".into(), operation(r, "delete", format!("delete{k}"), delete_params, false));
        }
        if !ops.is_empty() {
            ops.insert("parameters".into(), json!(item_params));
            paths.insert(item.clone(), Value::Object(ops));
        }
        for sub in r.subresources() {
            let mut ops = Map::new();
            for verb in sub.verbs {
                let (method, action, params, with_body) = match *verb {
                    "get" => ("get", "get", vec![], false),
                    "update" => ("put", "put", write_params(), true),
                    "patch" => ("patch", "patch", patch_params.clone(), true),
                    "create" => ("post", "post", write_params(), true),
                    _ => continue,
                };
                ops.insert(method.into(), operation(r, action, format!("{action}{k}_{}", sub.name), params, with_body));
            }
            ops.insert("parameters".into(), json!(item_params));
            paths.insert(format!("{item}/{}", sub.name), Value::Object(ops));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
        "paths": paths,
    })
}

// ---- protobuf ----

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(out, field, s.as_bytes());
    }
}

fn boolean(out: &mut Vec<u8>, field: u32, b: bool) {
    if b {
        tag(out, field, 0);
        varint(out, 1);
    }
}

fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    build(&mut inner);
    bytes_field(out, field, &inner);
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A vendor extension (`NamedAny`): the value travels as YAML, which JSON is.
fn vendor_extension(out: &mut Vec<u8>, field: u32, name: &str, value: &Value) {
    message(out, field, |na| {
        string(na, 1, name);
        message(na, 2, |any| string(any, 2, &value.to_string()));
    });
}

/// A `ParametersItem` (field 8 of an Operation, 9 of a PathItem) -> `Parameter` -> body or
/// non-body (query / path) parameter.
fn parameter(out: &mut Vec<u8>, field: u32, p: &Value) {
    message(out, field, |item| {
        message(item, 1, |param| match s(p, "in") {
            "body" => message(param, 1, |b| {
                string(b, 1, s(p, "description"));
                string(b, 2, s(p, "name"));
                string(b, 3, "body");
                boolean(b, 4, p.get("required").and_then(Value::as_bool).unwrap_or(false));
                message(b, 5, |schema| message(schema, 22, |ty| string(ty, 1, "object")));
            }),
            "path" => message(param, 2, |nb| {
                message(nb, 4, |pp| {
                    boolean(pp, 1, true);
                    string(pp, 2, "path");
                    string(pp, 3, s(p, "description"));
                    string(pp, 4, s(p, "name"));
                    string(pp, 5, s(p, "type"));
                    boolean(pp, 19, true);
                });
            }),
            _ => message(param, 2, |nb| {
                message(nb, 3, |qp| {
                    string(qp, 2, "query");
                    string(qp, 3, s(p, "description"));
                    string(qp, 4, s(p, "name"));
                    string(qp, 6, s(p, "type"));
                    boolean(qp, 20, true);
                });
            }),
        });
    });
}

fn operation_pb(out: &mut Vec<u8>, field: u32, op: &Value) {
    message(out, field, |o| {
        string(o, 5, s(op, "operationId"));
        for p in op.get("produces").and_then(Value::as_array).into_iter().flatten() {
            string(o, 6, p.as_str().unwrap_or(""));
        }
        for c in op.get("consumes").and_then(Value::as_array).into_iter().flatten() {
            string(o, 7, c.as_str().unwrap_or(""));
        }
        for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
            parameter(o, 8, p);
        }
        message(o, 9, |responses| {
            for (code, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
                message(responses, 1, |named| {
                    string(named, 1, code);
                    message(named, 2, |rv| message(rv, 1, |resp| string(resp, 1, s(r, "description"))));
                });
            }
        });
        for sch in op.get("schemes").and_then(Value::as_array).into_iter().flatten() {
            string(o, 10, sch.as_str().unwrap_or(""));
        }
        for (k, v) in op.as_object().into_iter().flatten() {
            if k.starts_with("x-") {
                vendor_extension(o, 13, k, v);
            }
        }
    });
}

/// The document in gnostic's protobuf encoding.
pub fn protobuf(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, 1, s(doc, "swagger"));
    message(&mut out, 2, |info| {
        string(info, 1, s(&doc["info"], "title"));
        string(info, 2, s(&doc["info"], "version"));
    });
    message(&mut out, 8, |paths| {
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            message(paths, 2, |named| {
                string(named, 1, path);
                message(named, 2, |pi| {
                    for (method, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
                        if let Some(op) = item.get(method) {
                            operation_pb(pi, field, op);
                        }
                    }
                    for p in item.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                        parameter(pi, 9, p);
                    }
                });
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the (field, wire, payload) records of one protobuf message.
    fn fields(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let read_varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            while let Some((&x, rest)) = b.split_first() {
                *b = rest;
                v |= u64::from(x & 0x7f) << shift;
                shift += 7;
                if x & 0x80 == 0 {
                    break;
                }
            }
            v
        };
        while !b.is_empty() {
            let key = read_varint(&mut b);
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u8);
            match wire {
                0 => out.push((field, read_varint(&mut b).to_le_bytes().to_vec())),
                2 => {
                    let len = read_varint(&mut b) as usize;
                    out.push((field, b[..len].to_vec()));
                    b = &b[len..];
                }
                _ => panic!("unexpected wire type {wire}"),
            }
        }
        out
    }

    fn get(b: &[u8], field: u32) -> Vec<Vec<u8>> {
        fields(b).into_iter().filter(|(f, _)| *f == field).map(|(_, v)| v).collect()
    }

    #[test]
    fn deployment_patch_operation_names_its_kind_and_field_validation_in_protobuf() {
        let doc = document(&Registry::builtin());
        let pb = protobuf(&doc);
        assert_eq!(get(&pb, 1)[0], b"2.0");
        let paths = &get(&pb, 8)[0];
        let item = get(paths, 2)
            .into_iter()
            .find(|named| {
                get(named, 1).first().map(Vec::as_slice)
                    == Some(b"/apis/apps/v1/namespaces/{namespace}/deployments/{name}".as_slice())
            })
            .expect("deployment path");
        let path_item = &get(&item, 2)[0];
        let patch = &get(path_item, 8)[0];
        let ext: Vec<(String, String)> = get(patch, 13)
            .iter()
            .map(|na| {
                (
                    String::from_utf8_lossy(&get(na, 1)[0]).into_owned(),
                    String::from_utf8_lossy(&get(&get(na, 2)[0], 2)[0]).into_owned(),
                )
            })
            .collect();
        let gvk = ext.iter().find(|(n, _)| n == "x-kubernetes-group-version-kind").expect("gvk").1.clone();
        let gvk: Value = serde_json::from_str(&gvk).expect("yaml that is JSON");
        assert_eq!(gvk, json!({"group": "apps", "version": "v1", "kind": "Deployment"}));
        let names: Vec<String> = get(patch, 8)
            .iter()
            .filter_map(|item| {
                let param = get(item, 1).into_iter().next()?;
                let non_body = get(&param, 2).into_iter().next()?;
                let q = get(&non_body, 3).into_iter().next()?;
                Some(String::from_utf8_lossy(&get(&q, 4)[0]).into_owned())
            })
            .collect();
        assert!(names.contains(&"fieldValidation".to_string()), "{names:?}");
        let shared = get(path_item, 9);
        assert_eq!(shared.len(), 2, "namespace and name path parameters");
    }

    #[test]
    fn the_json_document_has_no_definitions_for_kubectl_to_take_merge_keys_from() {
        let doc = document(&Registry::builtin());
        assert!(doc.get("definitions").is_none());
        assert_eq!(
            doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"]["x-kubernetes-action"],
            "post"
        );
    }
}
