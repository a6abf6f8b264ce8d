//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl sends it for
//! `apply`, `edit`, `set image`, `rollout restart` and `cordon`.
//!
//! Maps merge key by key and `null` deletes a key. Lists follow [`schema`]: atomic lists are
//! replaced, sets of primitives gain the patch's values, and keyed lists merge element by element
//! on their merge key. Directives:
//!
//! - `"$patch": "replace"` replaces a map (or, as a list element, the whole list);
//!   `"$patch": "delete"` deletes a map, or the keyed list element it sits in;
//! - `"$retainKeys": [...]` clears every key of the map not listed;
//! - `"$setElementOrder/<list>": [...]` orders the merged list: elements the patch does not name
//!   keep their live order and come first, then the named ones in the given order;
//! - `"$deleteFromPrimitiveList/<list>": [...]` removes values from a set.
//!
//! Without `$setElementOrder`, patched elements that already existed keep their place among the
//! rest and new ones go last. No directive survives into the result.

use serde_json::{Map, Value};

use super::schema::{self, List, Ty};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// Applies `patch` to `original` (an object of the type `ty`).
pub fn apply(original: &Value, patch: &Value, ty: Ty) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Err(bad("a strategic merge patch must be a JSON object"));
    };
    let empty = Map::new();
    let o = original.as_object().unwrap_or(&empty);
    match merge_map(o, p, ty)? {
        Some(m) => Ok(Value::Object(m)),
        None => Err(bad("a strategic merge patch may not delete the whole object")),
    }
}

fn is_directive(key: &str) -> bool {
    key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ORDER) || key.starts_with(DELETE_FROM)
}

/// The value with every directive removed, at every depth.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(k, _)| !is_directive(k)).map(|(k, v)| (k.clone(), strip(v))).collect())
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| !matches!(e, Value::Object(m) if m.len() == 1 && m.contains_key(PATCH)))
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Merges a patch map into an original map; `None` means the map is deleted.
fn merge_map(
    orig: &Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Ty,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get(PATCH).map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            let Value::Object(m) = strip(&Value::Object(patch.clone())) else { unreachable!("strip keeps objects") };
            return Ok(Some(m));
        }
        Some(Some("delete")) => return Ok(None),
        Some(other) => return Err(bad(format!("unknown patch type: {other:?} (expected replace, delete or merge)"))),
    }
    let mut result = orig.clone();
    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        match value {
            Value::Null => {
                result.remove(key);
            }
            Value::Object(p) => {
                let empty = Map::new();
                let o = result.get(key).and_then(Value::as_object).unwrap_or(&empty);
                match merge_map(o, p, schema::object(ty, key))? {
                    Some(m) => {
                        result.insert(key.clone(), Value::Object(m));
                    }
                    None => {
                        result.remove(key);
                    }
                }
            }
            Value::Array(p) => {
                let o = result.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
                let order = patch.get(&format!("{SET_ORDER}{key}")).map(as_list(key)).transpose()?;
                let merged = merge_list(&o, p, schema::list(ty, key), order)?;
                result.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                result.insert(key.clone(), scalar.clone());
            }
        }
    }
    // Directives that act on lists the patch does not otherwise touch.
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix(DELETE_FROM) {
            let remove = as_list(list)(value)?;
            if let Some(Value::Array(items)) = result.get_mut(list) {
                items.retain(|i| !remove.contains(i));
            }
        } else if let Some(list) = key.strip_prefix(SET_ORDER)
            && !patch.contains_key(list)
        {
            let order = as_list(list)(value)?;
            if let Some(Value::Array(items)) = result.get(list) {
                let strategy = schema::list(ty, list);
                let reordered = order_with(items.clone(), &[], &order_ids(strategy, order), strategy);
                result.insert(list.to_string(), Value::Array(reordered));
            }
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep = as_list(RETAIN_KEYS)(retain)?;
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        for (key, _) in patch {
            if !is_directive(key) && !keep.contains(&key.as_str()) {
                return Err(bad(format!("$retainKeys does not list {key:?}, which the patch sets")));
            }
        }
        result.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(result))
}

fn as_list(what: &str) -> impl Fn(&Value) -> Result<Vec<Value>, String> + '_ {
    move |v| v.as_array().cloned().ok_or_else(|| bad(format!("the directive for {what:?} must be a list")))
}

/// The identity of a list element for ordering and matching: the merge key's value for keyed
/// lists, the value itself otherwise.
fn identity(strategy: List, v: &Value) -> Option<Value> {
    match strategy {
        List::Map { merge_key, .. } => v.get(merge_key).cloned(),
        _ => Some(v.clone()),
    }
}

/// A `$setElementOrder` list as identities: merge-key values for keyed lists, values for sets.
fn order_ids(strategy: List, order: Vec<Value>) -> Vec<Value> {
    order.iter().filter_map(|e| identity(strategy, e)).collect()
}

fn replaces_list(patch: &[Value]) -> bool {
    patch.iter().any(|e| e.get(PATCH).and_then(Value::as_str) == Some("replace"))
}

fn merge_list(
    orig: &[Value],
    patch: &[Value],
    strategy: List,
    order: Option<Vec<Value>>,
) -> Result<Vec<Value>, String> {
    match strategy {
        List::Atomic => Ok(patch.iter().filter(|e| e.get(PATCH).is_none()).map(strip).collect()),
        List::Set => {
            if replaces_list(patch) {
                return Ok(patch.iter().filter(|e| !e.is_object()).cloned().collect());
            }
            let mut merged = orig.to_vec();
            for v in patch {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            let named: Vec<Value> = patch.to_vec();
            Ok(match order {
                Some(o) => order_with(merged, &named, &o, strategy),
                None => merged,
            })
        }
        List::Map { merge_key, item, .. } => {
            if replaces_list(patch) {
                return Ok(patch.iter().filter(|e| e.get(PATCH).is_none()).map(strip).collect());
            }
            let mut merged = orig.to_vec();
            let mut named = Vec::new();
            for p in patch {
                let Value::Object(pm) = p else {
                    return Err(bad(format!("elements of a list merged on {merge_key:?} must be objects")));
                };
                let Some(key) = pm.get(merge_key) else {
                    return Err(bad(format!("map: {p} does not contain declared merge key: {merge_key}")));
                };
                let pos = merged.iter().position(|e| e.get(merge_key) == Some(key));
                if pm.get(PATCH).and_then(Value::as_str) == Some("delete") {
                    merged.retain(|e| e.get(merge_key) != Some(key));
                    continue;
                }
                named.push(key.clone());
                let empty = Map::new();
                let base = pos.and_then(|i| merged[i].as_object()).unwrap_or(&empty);
                let element = merge_map(base, pm, item)?;
                match (pos, element) {
                    (Some(i), Some(m)) => merged[i] = Value::Object(m),
                    (Some(i), None) => {
                        merged.remove(i);
                    }
                    (None, Some(m)) => merged.push(Value::Object(m)),
                    (None, None) => {}
                }
            }
            Ok(match order {
                Some(o) => order_with(merged, &named, &order_ids(strategy, o), strategy),
                None => keep_live_order(merged, orig, &named, strategy),
            })
        }
    }
}

/// `$setElementOrder`: elements neither named by the patch nor listed keep their order and come
/// first; then the listed ones in the given order; then any the patch named but did not list.
fn order_with(merged: Vec<Value>, named: &[Value], order: &[Value], strategy: List) -> Vec<Value> {
    let id = |v: &Value| identity(strategy, v);
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for v in &merged {
        let i = id(v);
        let listed = i.as_ref().is_some_and(|i| order.contains(i));
        let in_patch = i.as_ref().is_some_and(|i| named.contains(i));
        if listed || in_patch { rest.push(v.clone()) } else { first.push(v.clone()) }
    }
    let mut out = first;
    for o in order {
        if let Some(pos) = rest.iter().position(|v| id(v).as_ref() == Some(o)) {
            out.push(rest.remove(pos));
        }
    }
    out.extend(rest);
    out
}

/// Without `$setElementOrder`: patched elements that existed keep their place relative to the
/// others, in the patch's order among themselves; new elements go last.
fn keep_live_order(merged: Vec<Value>, orig: &[Value], named: &[Value], strategy: List) -> Vec<Value> {
    let id = |v: &Value| identity(strategy, v);
    let live: Vec<Option<Value>> = orig.iter().map(id).collect();
    let live_pos = |v: &Value| id(v).and_then(|i| live.iter().position(|l| l.as_ref() == Some(&i)));
    let mut patched: Vec<Value> = Vec::new();
    let mut others: Vec<Value> = Vec::new();
    for v in merged {
        if id(&v).is_some_and(|i| named.contains(&i)) { patched.push(v) } else { others.push(v) }
    }
    patched.sort_by_key(|v| id(v).and_then(|i| named.iter().position(|n| *n == i)));
    let mut out = Vec::with_capacity(patched.len() + others.len());
    let (mut a, mut b) = (patched.into_iter().peekable(), others.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(p), Some(o)) => match (live_pos(p), live_pos(o)) {
                (Some(pi), Some(oi)) if pi < oi => out.extend(a.next()),
                _ => out.extend(b.next()),
            },
            (Some(_), None) => out.extend(a.next()),
            (None, Some(_)) => out.extend(b.next()),
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec(original: Value, patch: Value) -> Value {
        apply(&json!({"spec": original}), &json!({"spec": patch}), schema::root("Pod")).expect("applies")["spec"]
            .clone()
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let got = apply(
            &json!({"data": {"a": "1", "b": "2"}}),
            &json!({"data": {"b": null, "c": "3"}}),
            schema::root("ConfigMap"),
        );
        assert_eq!(got.expect("ok"), json!({"data": {"a": "1", "c": "3"}}));
    }

    #[test]
    fn keyed_lists_merge_by_their_key() {
        let original = json!({"containers": [{"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]}, {"name": "b", "image": "y"}]});
        let patch = json!({"containers": [{"name": "a", "image": "x:2", "env": [{"name": "B", "value": "2"}]}]});
        assert_eq!(
            pod_spec(original, patch),
            json!({"containers": [{"name": "a", "image": "x:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}, {"name": "b", "image": "y"}]})
        );
    }

    #[test]
    fn delete_directive_removes_a_keyed_element_and_null_a_field() {
        let original = json!({"containers": [{"name": "a", "env": [{"name": "A"}, {"name": "B"}]}]});
        let patch = json!({"containers": [{"name": "a", "env": [{"name": "A", "$patch": "delete"}]}]});
        assert_eq!(pod_spec(original.clone(), patch), json!({"containers": [{"name": "a", "env": [{"name": "B"}]}]}));
        // kubectl apply removing env entirely from a container:
        let patch = json!({"$setElementOrder/containers": [{"name": "a"}], "containers": [{"env": null, "name": "a"}]});
        assert_eq!(pod_spec(original, patch), json!({"containers": [{"name": "a"}]}));
    }

    #[test]
    fn replace_directive_replaces_maps_and_lists() {
        let got = apply(
            &json!({"data": {"a": "1", "b": "2"}}),
            &json!({"data": {"$patch": "replace", "c": "3"}}),
            schema::root("ConfigMap"),
        );
        assert_eq!(got.expect("ok"), json!({"data": {"c": "3"}}));
        let original = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let patch = json!({"containers": [{"$patch": "replace"}, {"name": "c"}]});
        assert_eq!(pod_spec(original, patch), json!({"containers": [{"name": "c"}]}));
        let got = apply(&json!({"spec": {"x": {"a": 1}}}), &json!({"spec": {"x": {"$patch": "delete"}}}), Ty::Object);
        assert_eq!(got.expect("ok"), json!({"spec": {}}));
    }

    #[test]
    fn atomic_lists_are_replaced_and_sets_gain_values() {
        let original = json!({"tolerations": [{"key": "a"}, {"key": "b"}]});
        assert_eq!(pod_spec(original, json!({"tolerations": [{"key": "c"}]})), json!({"tolerations": [{"key": "c"}]}));
        let got = apply(
            &json!({"metadata": {"finalizers": ["a", "b"]}}),
            &json!({"metadata": {"finalizers": ["b", "c"]}}),
            schema::root("ConfigMap"),
        );
        assert_eq!(got.expect("ok"), json!({"metadata": {"finalizers": ["a", "b", "c"]}}));
        let got = apply(
            &json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            schema::root("ConfigMap"),
        );
        assert_eq!(got.expect("ok"), json!({"metadata": {"finalizers": ["a", "c"]}}));
    }

    #[test]
    fn set_element_order_puts_unnamed_live_elements_first() {
        // The design note's env example: server-added ENV5/ENV4 keep their order and come first.
        let original = json!({"containers": [{"name": "c", "env": [
            {"name": "ENV2", "value": "bar"}, {"name": "ENV5"}, {"name": "ENV1", "value": "foo"}, {"name": "ENV3"}, {"name": "ENV4"}]}]});
        let patch = json!({"containers": [{"name": "c",
            "$setElementOrder/env": [{"name": "ENV1"}, {"name": "ENV2"}, {"name": "ENV6"}],
            "env": [{"name": "ENV3", "$patch": "delete"}, {"name": "ENV6", "value": "new"}]}]});
        let env = pod_spec(original, patch)["containers"][0]["env"].clone();
        let names: Vec<&str> = env.as_array().expect("env").iter().filter_map(|e| e["name"].as_str()).collect();
        assert_eq!(names, ["ENV5", "ENV4", "ENV1", "ENV2", "ENV6"]);
        // Primitive lists: finalizers.
        let got = apply(
            &json!({"metadata": {"finalizers": ["b", "e", "a", "c", "d"]}}),
            &json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "f"], "$deleteFromPrimitiveList/finalizers": ["c"], "finalizers": ["f"]}}),
            schema::root("ConfigMap"),
        );
        assert_eq!(got.expect("ok")["metadata"]["finalizers"], json!(["e", "d", "a", "b", "f"]));
        // A directive alone reorders.
        let original = json!({"containers": [{"name": "b"}, {"name": "a"}]});
        let got = pod_spec(original, json!({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}));
        assert_eq!(got, json!({"containers": [{"name": "a"}, {"name": "b"}]}));
    }

    #[test]
    fn without_an_order_patched_elements_keep_their_place_and_new_ones_go_last() {
        let original = json!({"containers": [{"name": "B"}, {"name": "C"}, {"name": "A"}]});
        let patch = json!({"containers": [{"name": "A", "x": 1}, {"name": "B", "x": 1}, {"name": "D"}]});
        let names: Vec<String> = pod_spec(original, patch)["containers"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(names, ["C", "A", "B", "D"]);
        let original = json!({"containers": [{"name": "A"}, {"name": "B"}, {"name": "C"}]});
        let names: Vec<String> = pod_spec(original, json!({"containers": [{"name": "A", "x": 1}]}))["containers"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(names, ["A", "B", "C"], "a patched element does not move");
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let got = apply(&original, &patch, schema::root("Deployment")).expect("ok");
        assert_eq!(got, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        assert!(apply(&original, &bad, schema::root("Deployment")).is_err());
    }

    #[test]
    fn service_ports_merge_on_port() {
        let original = json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}], "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
        let got = apply(&original, &patch, schema::root("Service")).expect("ok");
        assert_eq!(
            got["spec"]["ports"],
            json!([{"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443, "targetPort": 8443}])
        );
    }

    #[test]
    fn malformed_patches_are_errors_not_panics() {
        let root = schema::root("Pod");
        for patch in [
            json!([1]),
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            json!({"spec": {"containers": ["not-an-object"]}}),
            json!({"spec": {"$patch": "explode"}}),
            json!({"metadata": {"$setElementOrder/finalizers": "not-a-list"}}),
            json!({"$patch": "delete"}),
        ] {
            assert!(apply(&json!({"spec": {"containers": [{"name": "a"}]}}), &patch, root).is_err(), "{patch}");
        }
    }

    #[test]
    fn no_directive_survives() {
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X"}]}]}});
        let got = apply(&json!({}), &patch, schema::root("Pod")).expect("ok");
        assert!(!got.to_string().contains('$'), "{got}");
    }
}
