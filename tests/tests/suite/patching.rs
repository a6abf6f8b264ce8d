//! kubectl's editing commands against the real apiserver binary: client-side apply round trips,
//! edit, set, rollout restart, label --overwrite, cordon and patch in every type.

use e2e::etcd::Etcd;
use e2e::kubectl::Kubectl;
use e2e::server::Process;
use serde_json::Value;

fn manifest(name: &str) -> String {
    format!("{}/manifests/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn json(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = k.run(&all).ok().stdout;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn env_of(deploy: &Value) -> Vec<(String, String)> {
    deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e["value"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn cluster() -> (Etcd, Process) {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    (etcd, api)
}

#[tokio::test]
async fn kubectl_apply_updates_changed_fields_removes_deleted_ones_and_keeps_other_writers() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let out = k.run(&["apply", "-f", &manifest("apply/v1.yaml")]).ok().stdout;
    assert!(out.contains("configmap/app-config created") && out.contains("deployment.apps/app created"), "{out}");
    // Other writers change fields the manifest does not mention.
    k.run(&["set", "env", "deployment/app", "C=3"]).ok();
    k.run(&["annotate", "deployment", "app", "other-writer=kept"]).ok();
    k.run(&["patch", "configmap", "app-config", "--type", "merge", "-p", r#"{"data":{"other":"x"}}"#]).ok();

    let out = k.run(&["apply", "-f", &manifest("apply/v2.yaml")]).ok().stdout;
    assert!(out.contains("configmap/app-config configured") && out.contains("deployment.apps/app configured"), "{out}");
    let cm = json(&k, &["get", "configmap", "app-config"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"mode": "green", "added": "true", "other": "x"}),
        "removed key gone, other writer's key kept"
    );
    let d = json(&k, &["get", "deployment", "app"]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:1.36");
    // kubectl sends $setElementOrder/env [A]: C, which only the other writer set, keeps its
    // place ahead of the elements the manifest orders, as upstream orders them.
    assert_eq!(env_of(&d), [("C".to_string(), "3".to_string()), ("A".to_string(), "10".to_string())]);
    let ports: Vec<i64> =
        c["ports"].as_array().expect("ports").iter().filter_map(|p| p["containerPort"].as_i64()).collect();
    assert_eq!(ports, [8080, 9090]);
    assert_eq!(d["metadata"]["annotations"]["other-writer"], "kept");
    assert_eq!(d["metadata"]["generation"], 3, "set env and the re-apply each changed the spec");

    let again = k.run(&["apply", "-f", &manifest("apply/v2.yaml")]).ok().stdout;
    assert!(again.contains("configmap/app-config unchanged"), "{again}");
    // With the other writer's env var in the live list, kubectl sends an order-only patch on
    // every apply (it compares the live list's length with the manifest's), as against upstream;
    // the object itself does not change.
    assert!(again.contains("deployment.apps/app configured"), "{again}");
    let after = json(&k, &["get", "deployment", "app"]);
    assert_eq!(after["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"], "nothing was written");
}

#[tokio::test]
async fn kubectl_apply_takes_directories_and_recurses() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let dir = e2e::TempDir::new("manifests").expect("dir");
    std::fs::create_dir_all(dir.path().join("nested")).expect("nested");
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: top\ndata:\n  k: v\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("nested/b.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: deep\nstringData:\n  password: s3cret\n",
    )
    .expect("write");
    let flat = k.run(&["apply", "-f", &format!("{}/", dir.path().display())]).ok().stdout;
    assert!(flat.contains("configmap/top created") && !flat.contains("secret/deep"), "{flat}");
    let deep = k.run(&["apply", "-R", "-f", &dir.path().display().to_string()]).ok().stdout;
    assert!(deep.contains("configmap/top unchanged") && deep.contains("secret/deep created"), "{deep}");
    let secret = json(&k, &["get", "secret", "deep"]);
    assert_eq!(secret["data"]["password"], "czNjcmV0");
    assert!(secret.get("stringData").is_none());
}

#[tokio::test]
async fn kubectl_edit_set_image_rollout_restart_and_label_overwrite() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    k.run(&["apply", "-f", &manifest("apply/v2.yaml")]).ok();
    let edited = std::process::Command::new("kubectl")
        .args(["edit", "deployment", "app"])
        .env("KUBECONFIG", &api.endpoint.kubeconfig)
        .env("KUBE_EDITOR", "sed -i s/busybox:1.36/busybox:1.37/")
        .env("HOME", api.dir.path())
        .output()
        .expect("kubectl edit");
    assert!(edited.status.success(), "{}", String::from_utf8_lossy(&edited.stderr));
    assert_eq!(
        json(&k, &["get", "deployment", "app"])["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    k.run(&["set", "image", "deployment/app", "main=busybox:1.38"]).ok();
    assert_eq!(
        json(&k, &["get", "deployment", "app"])["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.38"
    );
    assert!(k.run(&["rollout", "restart", "deployment/app"]).ok().stdout.contains("deployment.apps/app restarted"));
    let d = json(&k, &["get", "deployment", "app"]);
    assert!(d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(), "{d}");
    k.run(&["label", "configmap", "app-config", "tier=a"]).ok();
    let clash = k.run(&["label", "configmap", "app-config", "tier=b"]);
    assert_ne!(clash.code, 0, "relabelling needs --overwrite");
    k.run(&["label", "configmap", "app-config", "tier=b", "--overwrite"]).ok();
    assert_eq!(json(&k, &["get", "configmap", "app-config"])["metadata"]["labels"]["tier"], "b");
}

#[tokio::test]
async fn kubectl_cordon_and_uncordon_a_node() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    k.run_stdin(&["create", "-f", "-"], "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n").ok();
    assert!(k.run(&["cordon", "n1"]).ok().stdout.contains("node/n1 cordoned"));
    assert_eq!(json(&k, &["get", "node", "n1"])["spec"]["unschedulable"], true);
    let table = k.run(&["get", "node", "n1"]).ok().stdout;
    assert!(table.contains("SchedulingDisabled"), "{table}");
    assert!(k.run(&["uncordon", "n1"]).ok().stdout.contains("node/n1 uncordoned"));
    assert!(json(&k, &["get", "node", "n1"])["spec"].get("unschedulable").is_none_or(|u| u == false));
}

#[tokio::test]
async fn kubectl_patch_in_every_type() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    k.run(&["apply", "-f", &manifest("apply/v1.yaml")]).ok();
    // Strategic (the default): env merges by name.
    k.run(&[
        "patch",
        "deployment",
        "app",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","env":[{"name":"B","value":"20"}]}]}}}}"#,
    ])
    .ok();
    assert_eq!(
        env_of(&json(&k, &["get", "deployment", "app"])),
        [("A".to_string(), "1".to_string()), ("B".to_string(), "20".to_string())]
    );
    // Merge: lists are replaced.
    k.run(&[
        "patch",
        "deployment",
        "app",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"busybox:1.36"}]}}}}"#,
    ])
    .ok();
    let d = json(&k, &["get", "deployment", "app"]);
    assert!(env_of(&d).is_empty(), "a merge patch replaces the containers list");
    // JSON patch, with a test that fails: nothing changes.
    k.run(&[
        "patch",
        "configmap",
        "app-config",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/mode","value":"red"}]"#,
    ])
    .ok();
    assert_eq!(json(&k, &["get", "configmap", "app-config"])["data"]["mode"], "red");
    let failed = k.run(&[
        "patch",
        "configmap",
        "app-config",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/data/mode","value":"blue"},{"op":"remove","path":"/data/mode"}]"#,
    ]);
    assert_ne!(failed.code, 0);
    assert_eq!(json(&k, &["get", "configmap", "app-config"])["data"]["mode"], "red");
    // A strategic patch that does not apply is refused with the reason.
    let bad = k.run(&[
        "patch",
        "deployment",
        "app",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}"#,
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("merge key"), "{}", bad.stderr);
}

#[tokio::test]
async fn kubectl_scale_uses_the_scale_subresource() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    k.run(&["apply", "-f", &manifest("apply/v1.yaml")]).ok();
    assert!(k.run(&["scale", "deployment", "app", "--replicas=3"]).ok().stdout.contains("deployment.apps/app scaled"));
    assert_eq!(json(&k, &["get", "deployment", "app"])["spec"]["replicas"], 3);
    // --current-replicas is a precondition: a wrong guess changes nothing.
    let wrong = k.run(&["scale", "deployment", "app", "--current-replicas=2", "--replicas=5"]);
    assert_ne!(wrong.code, 0);
    assert_eq!(json(&k, &["get", "deployment", "app"])["spec"]["replicas"], 3);
    k.run(&["scale", "deployment", "app", "--current-replicas=3", "--replicas=5"]).ok();
    assert_eq!(json(&k, &["get", "deployment", "app"])["spec"]["replicas"], 5);
    let scale: Value = serde_json::from_str(
        &k.run(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/app/scale"]).ok().stdout,
    )
    .expect("scale");
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some(5)));
    assert_eq!(scale["status"]["selector"], "app=app");
}

#[tokio::test]
async fn kubectl_dry_run_server_validates_without_writing() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let out = k.run(&["apply", "-f", &manifest("apply/v1.yaml"), "--dry-run=server"]).ok().stdout;
    assert!(out.contains("configmap/app-config created (server dry run)"), "{out}");
    assert_ne!(k.run(&["get", "configmap", "app-config"]).code, 0, "nothing was created");
    k.run(&["apply", "-f", &manifest("apply/v1.yaml")]).ok();
    k.run(&["scale", "deployment", "app", "--replicas=4", "--dry-run=server"]).ok();
    k.run(&["label", "configmap", "app-config", "dry=run", "--dry-run=server"]).ok();
    k.run(&["delete", "configmap", "app-config", "--dry-run=server"]).ok();
    let cm = json(&k, &["get", "configmap", "app-config"]);
    assert!(cm["metadata"]["labels"].get("dry").is_none());
    assert_eq!(json(&k, &["get", "deployment", "app"])["spec"]["replicas"], 1);
    let invalid = k.run_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    assert_ne!(invalid.code, 0, "server dry run still validates");
}

#[tokio::test]
async fn kubectl_delete_cascade_orphan_and_foreground_leave_finalizers_for_the_collector() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    k.run(&["apply", "-f", &manifest("apply/v1.yaml")]).ok();
    k.run(&["delete", "deployment", "app", "--cascade=orphan", "--wait=false"]).ok();
    let d = json(&k, &["get", "deployment", "app"]);
    assert_eq!(d["metadata"]["finalizers"], serde_json::json!(["orphan"]));
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    k.run(&["delete", "configmap", "app-config", "--cascade=foreground", "--wait=false"]).ok();
    assert_eq!(
        json(&k, &["get", "configmap", "app-config"])["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"])
    );
    // Until the garbage collector (controller-manager) runs, removing the finalizer completes it.
    k.run(&["patch", "configmap", "app-config", "--type", "merge", "-p", r#"{"metadata":{"finalizers":null}}"#]).ok();
    assert_ne!(k.run(&["get", "configmap", "app-config"]).code, 0, "gone once its finalizer is removed");
}

#[tokio::test]
async fn kubectl_force_deletes_a_terminating_pod() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n";
    k.run_stdin(&["create", "-f", "-"], pod).ok();
    k.run(&["delete", "pod", "p", "--wait=false"]).ok();
    let table = k.run(&["get", "pod", "p"]).ok().stdout;
    assert!(table.contains("Terminating"), "a scheduled pod waits for its kubelet: {table}");
    let p = json(&k, &["get", "pod", "p"]);
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    let forced = k.run(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_ne!(k.run(&["get", "pod", "p"]).code, 0);
}

#[tokio::test]
async fn services_applied_by_kubectl_get_unique_cluster_ips_and_node_ports() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let mut docs = String::new();
    for i in 0..12 {
        let ty = if i % 2 == 0 { "NodePort" } else { "ClusterIP" };
        docs.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\nspec:\n  type: {ty}\n  selector:\n    app: s{i}\n  ports:\n  - port: 80\n"));
    }
    k.run_stdin(&["apply", "-f", "-"], &docs).ok();
    let list = json(&k, &["get", "services"]);
    let mut ips = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for s in list["items"].as_array().expect("items") {
        assert!(ips.insert(s["spec"]["clusterIP"].as_str().expect("ip").to_string()), "duplicate ClusterIP");
        if s["spec"]["type"] == "NodePort" {
            assert!(ports.insert(s["spec"]["ports"][0]["nodePort"].as_i64().expect("node port")));
        }
    }
    assert_eq!((ips.len(), ports.len()), (13, 6), "12 Services and kubernetes; 6 NodePorts");
    assert!(ips.contains("10.96.0.1"), "the kubernetes Service keeps the first address");
    // Re-applying keeps every allocation.
    k.run_stdin(&["apply", "-f", "-"], &docs).ok();
    let again = json(&k, &["get", "services"]);
    assert_eq!(again["items"], list["items"], "re-apply changes nothing");
    let taken = k.run_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  clusterIP: 10.96.0.1\n  ports:\n  - port: 80\n");
    assert_ne!(taken.code, 0);
    assert!(taken.stderr.contains("provided IP is already allocated"), "{}", taken.stderr);
}

#[tokio::test]
async fn kubectl_create_generators_send_protobuf_and_are_understood() {
    let (_etcd, api) = cluster().await;
    for minor in ["1.32", "1.33"] {
        if !Kubectl::available(minor) {
            continue;
        }
        let k = Kubectl::version(minor, &api.endpoint);
        let ns = format!("team-{}", minor.replace('.', "-"));
        assert!(k.run(&["create", "namespace", &ns]).ok().stdout.contains(&format!("namespace/{ns} created")));
        let n = json(&k, &["get", "namespace", &ns]);
        assert_eq!(
            (n["status"]["phase"].as_str(), n["spec"]["finalizers"][0].as_str()),
            (Some("Active"), Some("kubernetes"))
        );
        k.run(&["create", "configmap", "cfg", "-n", &ns, "--from-literal=a=b", "--from-literal=c=d"]).ok();
        assert_eq!(json(&k, &["get", "configmap", "cfg", "-n", &ns])["data"], serde_json::json!({"a": "b", "c": "d"}));
        k.run(&["create", "secret", "generic", "sec", "-n", &ns, "--from-literal=password=s3cret"]).ok();
        let s = json(&k, &["get", "secret", "sec", "-n", &ns]);
        assert_eq!((s["data"]["password"].as_str(), s["type"].as_str()), (Some("czNjcmV0"), Some("Opaque")));
        k.run(&["create", "deployment", "web", "-n", &ns, "--image=busybox:1.36", "--replicas=2", "--port=8080"]).ok();
        let d = json(&k, &["get", "deployment", "web", "-n", &ns]);
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("busybox"), Some("busybox:1.36")));
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        k.run(&["create", "service", "clusterip", "web", "-n", &ns, "--tcp=80:8080"]).ok();
        let svc = json(&k, &["get", "service", "web", "-n", &ns]);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
        assert!(svc["spec"]["clusterIP"].as_str().is_some_and(|ip| ip.starts_with("10.")));
        // Protobuf always carries nodePort, as 0 when the user chose none: that means "allocate one".
        let out = k.run(&["create", "service", "nodeport", "edge", "-n", &ns, "--tcp=80:8080", "-v=8"]).ok();
        assert!(out.stderr.contains("application/vnd.kubernetes.protobuf"), "kubectl sent no protobuf: {}", out.stderr);
        let np = json(&k, &["get", "service", "edge", "-n", &ns])["spec"]["ports"][0]["nodePort"].as_i64();
        assert!(np.is_some_and(|p| (30000..=32767).contains(&p)), "nodePort {np:?}");
        k.run(&["create", "job", "once", "-n", &ns, "--image=busybox", "--", "echo", "hi"]).ok();
        let j = json(&k, &["get", "job", "once", "-n", &ns]);
        assert_eq!(j["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]));
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
        k.run(&["create", "serviceaccount", "robot", "-n", &ns]).ok();
        json(&k, &["get", "serviceaccount", "robot", "-n", &ns]);
        k.run(&["create", "cronjob", "nightly", "-n", &ns, "--image=busybox", "--schedule=0 3 * * *", "--", "date"])
            .ok();
        assert_eq!(json(&k, &["get", "cronjob", "nightly", "-n", &ns])["spec"]["schedule"], "0 3 * * *");
    }
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{}/{}", e["manager"].as_str().unwrap_or(""), e["operation"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

fn configmap(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n{data}")
}

#[tokio::test]
async fn kubectl_apply_server_side_creates_removes_conflicts_and_forces() {
    let (_etcd, api) = cluster().await;
    for minor in ["1.27", "1.33"] {
        if !Kubectl::available(minor) {
            continue;
        }
        let k = Kubectl::version(minor, &api.endpoint);
        let ns = format!("ssa-{}", minor.replace('.', "-"));
        k.run(&["create", "namespace", &ns]).ok();
        let apply = |extra: &[&str], manifest: &str| {
            let mut args = vec!["apply", "--server-side", "-n", &ns, "-f", "-"];
            args.extend(extra);
            k.run_stdin(&args, manifest)
        };
        let out = apply(&[], &configmap("  a: \"1\"\n  b: \"2\"\n")).ok().stdout;
        assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
        let cm = json(&k, &["get", "configmap", "ssa", "-n", &ns, "--show-managed-fields"]);
        assert_eq!(managers(&cm), ["kubectl/Apply"]);
        assert_eq!(
            cm["metadata"]["managedFields"][0]["fieldsV1"],
            serde_json::json!({"f:data": {"f:a": {}, "f:b": {}}})
        );

        // Re-applying without b removes it; an unchanged apply leaves the object alone.
        apply(&[], &configmap("  a: \"1\"\n")).ok();
        let cm = json(&k, &["get", "configmap", "ssa", "-n", &ns]);
        assert_eq!(cm["data"], serde_json::json!({"a": "1"}));
        apply(&[], &configmap("  a: \"1\"\n")).ok();
        assert_eq!(
            json(&k, &["get", "configmap", "ssa", "-n", &ns])["metadata"]["resourceVersion"],
            cm["metadata"]["resourceVersion"]
        );

        // Another manager setting a different value conflicts, and wins with --force-conflicts.
        let failed = apply(&["--field-manager=deployer"], &configmap("  a: \"9\"\n"));
        assert_ne!(failed.code, 0);
        assert!(
            failed.stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"),
            "{}",
            failed.stderr
        );
        apply(&["--field-manager=deployer", "--force-conflicts"], &configmap("  a: \"9\"\n")).ok();
        let cm = json(&k, &["get", "configmap", "ssa", "-n", &ns, "--show-managed-fields"]);
        assert_eq!(cm["data"]["a"], "9");
        assert_eq!(managers(&cm), ["deployer/Apply"], "kubectl owned only .data.a and lost it");

        // A manager sharing a value owns it too; the field stays while either still applies it.
        apply(&[], &configmap("  a: \"9\"\n  c: \"3\"\n")).ok();
        apply(&["--field-manager=deployer"], &configmap("  c: \"3\"\n")).ok();
        let cm = json(&k, &["get", "configmap", "ssa", "-n", &ns]);
        assert_eq!(cm["data"], serde_json::json!({"a": "9", "c": "3"}), "kubectl still applies a");
    }
}

#[tokio::test]
async fn kubectl_moves_a_client_side_applied_object_to_server_side_apply() {
    let (_etcd, api) = cluster().await;
    let k = Kubectl::new(&api.endpoint);
    k.run(&["apply", "-f", &manifest("apply/v1.yaml")]).ok();
    let before = json(&k, &["get", "deployment", "app", "--show-managed-fields"]);
    assert_eq!(managers(&before), ["kubectl-client-side-apply/Update"]);
    // v2 changes fields kubectl apply set: no conflict, since the live object still matches
    // the last-applied annotation.
    let out = k.run(&["apply", "--server-side", "-f", &manifest("apply/v2.yaml")]).ok().stdout;
    assert!(out.contains("deployment.apps/app serverside-applied"), "{out}");
    let d = json(&k, &["get", "deployment", "app", "--show-managed-fields"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1.36");
    let names = managers(&d);
    assert!(names.contains(&"kubectl/Apply".to_string()), "{names:?}");
    assert!(!names.iter().any(|m| m.starts_with("kubectl-client-side-apply")), "kubectl migrated the entry: {names:?}");
    let last: Value = serde_json::from_str(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().expect("annotation"),
    )
    .expect("json");
    assert_eq!(last["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1.36", "the annotation follows");
    // kubectl folded the client-side entry into its own, so what v1 set and v2 dropped (env B)
    // went on its second apply.
    assert_eq!(env_of(&d), [("A".to_string(), "10".to_string())]);
    // And what it drops now goes too.
    let v3 = std::fs::read_to_string(manifest("apply/v2.yaml")).expect("v2");
    let v3 = v3.replace("        - containerPort: 9090\n          name: metrics\n", "");
    k.run_stdin(&["apply", "--server-side", "-f", "-"], &v3).ok();
    let d = json(&k, &["get", "deployment", "app"]);
    let ports: Vec<i64> = d["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert_eq!(ports, [8080]);
}
