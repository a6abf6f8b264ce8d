use serde_json::{Value, json};

use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-01T00:01:00Z";

fn main_scope() -> &'static Target {
    static T: std::sync::LazyLock<Target> = std::sync::LazyLock::new(|| Target {
        kind: "ConfigMap",
        api_version: "v1".into(),
        scope: Scope::Main { has_status: false },
    });
    &T
}

fn deploy_scope() -> &'static Target {
    static T: std::sync::LazyLock<Target> = std::sync::LazyLock::new(|| Target {
        kind: "Deployment",
        api_version: "apps/v1".into(),
        scope: Scope::Main { has_status: true },
    });
    &T
}

fn who(name: &str) -> Manager<'_> {
    Manager { name, subresource: "" }
}

fn managers(obj: &Value) -> Vec<(String, String, Value)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").into(),
                        e["operation"].as_str().unwrap_or("").into(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of(obj: &Value, manager: &str, op: &str) -> Value {
    managers(obj).into_iter().find(|(m, o, _)| m == manager && o == op).map(|(_, _, f)| f).unwrap_or(Value::Null)
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data})
}

#[test]
fn a_deployment_s_fields_use_keys_atomic_selectors_and_the_default_port_protocol() {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}
            ]}}
        }
    });
    let mut s = field_set(&d, "Deployment");
    strip(&mut s, Scope::Main { has_status: true });
    assert_eq!(
        s.to_fields_v1(),
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    );
}

#[test]
fn create_gives_the_creator_every_field_it_set_and_marks_new_maps() {
    let mut obj = cm(json!({"a": "1"}));
    obj["metadata"]["labels"] = json!({"x": "y"});
    track_update(None, &mut obj, main_scope(), who("kubectl-create"), NOW);
    let mf = &obj["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl-create");
    assert_eq!(mf["operation"], "Update");
    assert_eq!(mf["apiVersion"], "v1");
    assert_eq!(mf["time"], NOW);
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert_eq!(
        mf["fieldsV1"],
        json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:x": {}}}})
    );
}

#[test]
fn an_update_moves_the_fields_it_changes_to_its_manager() {
    let mut v1 = cm(json!({"a": "1", "b": "2"}));
    track_update(None, &mut v1, main_scope(), who("creator"), NOW);
    let mut v2 = v1.clone();
    v2["data"]["a"] = json!("changed");
    v2["data"]["c"] = json!("new");
    v2["data"].as_object_mut().map(|m| m.remove("b"));
    track_update(Some(&v1), &mut v2, main_scope(), who("editor"), LATER);
    assert_eq!(fields_of(&v2, "creator", "Update"), json!({"f:data": {}}));
    assert_eq!(fields_of(&v2, "editor", "Update"), json!({"f:data": {"f:a": {}, "f:c": {}}}));
    // An update that changes nothing records nothing.
    let mut v3 = v2.clone();
    track_update(Some(&v2), &mut v3, main_scope(), who("idle"), LATER);
    assert_eq!(managers(&v3).len(), 2);
}

#[test]
fn managed_fields_sent_by_the_client_replace_the_stored_ones_and_a_single_empty_entry_clears_them() {
    let mut v1 = cm(json!({"a": "1"}));
    track_update(None, &mut v1, main_scope(), who("creator"), NOW);
    let mut v2 = v1.clone();
    v2["metadata"]["managedFields"] = json!([{"manager": "other", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]);
    track_update(Some(&v1), &mut v2, main_scope(), who("migrator"), LATER);
    assert_eq!(managers(&v2), vec![("other".into(), "Apply".into(), json!({"f:data": {"f:a": {}}}))]);
    let mut v3 = v2.clone();
    v3["metadata"]["managedFields"] = json!([{}]);
    track_update(Some(&v2), &mut v3, main_scope(), who("x"), LATER);
    assert!(v3["metadata"].get("managedFields").is_none());
    // Garbage is ignored: the stored entries stay.
    let mut v4 = v2.clone();
    v4["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Bogus"}]);
    track_update(Some(&v2), &mut v4, main_scope(), who("x"), LATER);
    assert_eq!(managers(&v4), managers(&v2));
}

#[test]
fn apply_creates_then_conflicts_with_another_manager_unless_forced() {
    let config = cm(json!({"a": "1"}));
    let created = apply(None, &config, main_scope(), who("alice"), false, NOW).expect("create");
    assert_eq!(created["data"], json!({"a": "1"}));
    assert_eq!(managers(&created), vec![("alice".into(), "Apply".into(), json!({"f:data": {"f:a": {}}}))]);

    // The same value from someone else is shared, not a conflict.
    let shared = apply(Some(&created), &cm(json!({"a": "1"})), main_scope(), who("bob"), false, LATER).expect("same");
    assert_eq!(fields_of(&shared, "alice", "Apply"), json!({"f:data": {"f:a": {}}}));
    assert_eq!(fields_of(&shared, "bob", "Apply"), json!({"f:data": {"f:a": {}}}));

    let err =
        apply(Some(&created), &cm(json!({"a": "2"})), main_scope(), who("bob"), false, LATER).expect_err("conflict");
    assert_eq!(err.message(), "Apply failed with 1 conflict: conflict with \"alice\": .data.a");
    let causes = err.causes();
    assert_eq!((causes[0].reason, causes[0].field.as_str()), ("FieldManagerConflict", ".data.a"));

    let forced = apply(Some(&created), &cm(json!({"a": "2"})), main_scope(), who("bob"), true, LATER).expect("force");
    assert_eq!(forced["data"]["a"], "2");
    assert_eq!(fields_of(&forced, "alice", "Apply"), Value::Null);
    assert_eq!(fields_of(&forced, "bob", "Apply"), json!({"f:data": {"f:a": {}}}));
}

#[test]
fn conflicts_with_several_managers_are_listed_by_manager() {
    let mut obj = cm(json!({"a": "1", "b": "1"}));
    track_update(None, &mut obj, main_scope(), who("kubectl-client-side-apply"), NOW);
    let obj = apply(Some(&obj), &cm(json!({"c": "1"})), main_scope(), who("alice"), false, NOW).expect("no overlap");
    let err = apply(Some(&obj), &cm(json!({"a": "2", "b": "2", "c": "2"})), main_scope(), who("bob"), false, LATER)
        .expect_err("conflicts");
    assert_eq!(
        err.message(),
        "Apply failed with 3 conflicts: conflicts with \"alice\":\n- .data.c\nconflicts with \"kubectl-client-side-apply\" using v1:\n- .data.a\n- .data.b"
    );
}

#[test]
fn fields_dropped_from_the_configuration_go_unless_someone_else_owns_them() {
    let v1 =
        apply(None, &cm(json!({"a": "1", "b": "1", "c": "1"})), main_scope(), who("alice"), false, NOW).expect("v1");
    let v2 = apply(Some(&v1), &cm(json!({"c": "1"})), main_scope(), who("bob"), false, NOW).expect("bob shares c");
    let v3 = apply(Some(&v2), &cm(json!({"a": "1"})), main_scope(), who("alice"), false, LATER).expect("drop b and c");
    assert_eq!(v3["data"], json!({"a": "1", "c": "1"}), "b is gone, c is bob's");
    let v4 = apply(Some(&v3), &cm(json!({})), main_scope(), who("alice"), false, LATER).expect("drop a");
    assert_eq!(v4["data"], json!({"c": "1"}));
    let v5 = apply(Some(&v4), &cm(json!({})), main_scope(), who("bob"), false, LATER).expect("drop c");
    assert!(v5.get("data").is_none(), "{v5}");
}

#[test]
fn dropped_containers_and_env_go_but_fields_another_manager_set_stay() {
    let deploy = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": containers}}}})
    };
    let v1 = apply(
        None,
        &deploy(json!([{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]},
                      {"name": "b", "image": "y"}])),
        deploy_scope(),
        who("alice"),
        false,
        NOW,
    )
    .expect("v1");
    // A controller sets a field of container b.
    let mut v2 = v1.clone();
    v2["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = json!("Always");
    track_update(Some(&v1), &mut v2, deploy_scope(), who("ctrl"), NOW);
    let v3 = apply(
        Some(&v2),
        &deploy(json!([{"name": "a", "image": "x", "env": [{"name": "F", "value": "2"}]}])),
        deploy_scope(),
        who("alice"),
        false,
        LATER,
    )
    .expect("v3");
    let cs = &v3["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs[0]["env"], json!([{"name": "F", "value": "2"}]));
    assert_eq!(cs[1], json!({"name": "b", "imagePullPolicy": "Always"}), "ctrl's field and the key stay");
}

#[test]
fn keyed_lists_merge_by_key_and_keep_live_only_items_in_place() {
    let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "side"}, {"name": "b", "image": "old"}]}}}});
    let cfg = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "new"}, {"name": "c"}]}}}});
    let got = merge(&live, &cfg, "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a"}, {"name": "side"}, {"name": "b", "image": "new"}, {"name": "c"}])
    );
    // Atomic values are replaced, not merged.
    let live = json!({"spec": {"selector": {"matchLabels": {"a": "1", "b": "2"}}, "strategy": {"type": "X", "rollingUpdate": {"maxSurge": 1}}}});
    let cfg = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "strategy": {"type": "Y"}}});
    let got = merge(&live, &cfg, "Deployment");
    assert_eq!(got["spec"]["selector"], json!({"matchLabels": {"a": "1"}}));
    assert_eq!(got["spec"]["strategy"], json!({"type": "Y", "rollingUpdate": {"maxSurge": 1}}));
    // Sets are unions.
    let got = merge(
        &json!({"metadata": {"finalizers": ["a", "b"]}}),
        &json!({"metadata": {"finalizers": ["c", "a"]}}),
        "ConfigMap",
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["c", "a", "b"]));
}

#[test]
fn configurations_without_list_keys_or_with_duplicates_are_refused() {
    let missing = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let err = check_config(&missing, "Deployment").expect_err("no name");
    assert!(err.contains(".spec.template.spec.containers: element 0") && err.contains("\"name\""), "{err}");
    let dup = json!({"spec": {"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]}});
    assert!(check_config(&dup, "Service").expect_err("duplicate").contains("duplicate"));
    assert!(
        check_config(&json!({"spec": {"ports": [{"port": 80}, {"port": 80, "protocol": "UDP"}]}}), "Service").is_ok()
    );
}

#[test]
fn kubectl_takes_over_client_side_applied_fields_while_they_match_the_annotation() {
    let last =
        r#"{"apiVersion":"v1","data":{"a":"1"},"kind":"ConfigMap","metadata":{"name":"c","namespace":"default"}}"#;
    let mut v1 = cm(json!({"a": "1"}));
    v1["metadata"]["annotations"] = json!({LAST_APPLIED: last});
    track_update(None, &mut v1, main_scope(), who("kubectl-client-side-apply"), NOW);
    let v2 = apply(Some(&v1), &cm(json!({"a": "2"})), main_scope(), who("kubectl"), false, LATER).expect("taken over");
    assert_eq!(v2["data"]["a"], "2");
    let ann: Value =
        serde_json::from_str(v2["metadata"]["annotations"][LAST_APPLIED].as_str().expect("ann")).expect("json");
    assert_eq!(ann["data"]["a"], "2", "the annotation follows kubectl's applies");
    // Any other manager, or a live value that no longer matches the annotation, conflicts.
    assert!(apply(Some(&v1), &cm(json!({"a": "2"})), main_scope(), who("helm"), false, LATER).is_err());
    let mut drifted = v1.clone();
    drifted["data"]["a"] = json!("edited");
    assert!(apply(Some(&drifted), &cm(json!({"a": "2"})), main_scope(), who("kubectl"), false, LATER).is_err());
}

#[test]
fn status_writes_own_only_status_and_main_writes_never_do() {
    let scope = &Target { kind: "Deployment", api_version: "apps/v1".into(), scope: Scope::Status };
    let old = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
    let mut new = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
    track_update(Some(&old), &mut new, scope, Manager { name: "ctrl", subresource: "status" }, NOW);
    let e = &new["metadata"]["managedFields"][0];
    assert_eq!(
        (e["subresource"].as_str(), &e["fieldsV1"]),
        (Some("status"), &json!({"f:status": {".": {}, "f:replicas": {}}}))
    );
    let mut main = new.clone();
    main["status"]["replicas"] = json!(5);
    track_update(Some(&new), &mut main, deploy_scope(), who("someone"), NOW);
    assert_eq!(managers(&main).len(), 1);
}

#[test]
fn more_than_ten_update_managers_fold_the_oldest_into_ancient_changes() {
    let mut obj = cm(json!({}));
    for i in 0..12 {
        let old = obj.clone();
        obj["data"][format!("k{i}")] = json!("v");
        track_update(
            Some(&old),
            &mut obj,
            main_scope(),
            who(&format!("m{i:02}")),
            &format!("2026-01-01T00:00:{i:02}Z"),
        );
    }
    let ms = managers(&obj);
    assert_eq!(ms.len(), 10);
    let ancient = fields_of(&obj, "ancient-changes", "Update");
    assert_eq!(ancient, json!({"f:data": {"f:k0": {}, "f:k1": {}, "f:k2": {}}}));
    assert!(ms.iter().any(|(m, _, _)| m == "m11"));
}

#[test]
fn a_repeated_apply_changes_nothing_not_even_the_time() {
    let v1 = apply(None, &cm(json!({"a": "1"})), main_scope(), who("alice"), false, NOW).expect("v1");
    let v2 = apply(Some(&v1), &cm(json!({"a": "1"})), main_scope(), who("alice"), false, LATER).expect("v2");
    assert_eq!(v1, v2);
}
