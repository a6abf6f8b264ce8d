//! The decode path as one function of untrusted bytes, for the fuzz target
//! (`apiserver/fuzz`) and the random-input test below: request bodies in every format, the typed
//! round trip of every kind, strict field checks, selectors, continue tokens and stored-object
//! rendering. It must return for every input; a panic is a bug.

use crate::codec::{self, BodyFormat};
use crate::resources::Registry;
use crate::selectors::{FieldSelector, LabelSelector};

pub fn decode_path(registry: &Registry, data: &[u8]) {
    for format in [BodyFormat::Json, BodyFormat::Yaml, BodyFormat::Protobuf] {
        if let Ok(decoded) = codec::decode_body(data, format) {
            for info in registry.all() {
                if let Ok(normalized) = info.normalize(decoded.value.clone()) {
                    let unknown = codec::unknown_fields(&decoded.value, &normalized);
                    let _ = codec::field_problems(&unknown, &decoded.duplicates);
                    let stored = codec::encode_for_storage(&normalized);
                    let _ = codec::render_stored(&stored, 7);
                    let _ = crate::table::row(
                        crate::table::definition(info),
                        &normalized,
                        crate::table::IncludeObject::Metadata,
                        jiff::Timestamp::UNIX_EPOCH,
                    );
                    let _ = info.strategy.validate(&normalized);
                    let mut created = normalized.clone();
                    info.strategy.prepare_for_create(&mut created);
                    let _ = info.strategy.validate_update(&created, &normalized);
                    apply_path(info, &decoded.value, &normalized);
                }
            }
            let _ = crate::patch::fieldset::FieldSet::from_fields_v1(&decoded.value);
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = LabelSelector::parse(&text);
    if let Some(pods) = registry.by_plural("", "pods") {
        let _ = FieldSelector::parse(&text, pods);
    }
    let _ = codec::render_stored(data, 1);
    let _ = crate::http::percent_decode(&text, true);
    let _ = crate::http::negotiate(Some(&text), true, crate::table::IncludeObject::Metadata);
    let _ = crate::discovery::aggregated_version(&text);
}

/// Server-side apply of the input onto itself and onto an object with its managed fields.
fn apply_path(info: &crate::resources::ResourceInfo, raw: &serde_json::Value, normalized: &serde_json::Value) {
    use crate::patch::apply::{self, Manager, Scope, Target};
    if apply::check_config(normalized, info.kind).is_err() {
        return;
    }
    let target =
        Target { kind: info.kind, api_version: info.api_version(), scope: Scope::Main { has_status: info.has_status } };
    let who = Manager { name: "fuzz", subresource: "" };
    let now = "2026-01-01T00:00:00Z";
    let mut tracked = normalized.clone();
    apply::track_update(None, &mut tracked, &target, who, now);
    let other = Manager { name: "other", subresource: "" };
    let _ = apply::apply(Some(&tracked), normalized, &target, other, false, now);
    if let Ok(applied) = apply::apply(Some(&tracked), normalized, &target, other, true, now) {
        let _ = apply::apply(Some(&applied), &serde_json::json!({}), &target, other, false, now);
    }
    // The raw input as client-sent managedFields.
    let mut with_fields = normalized.clone();
    if let Some(m) = with_fields.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
        m.insert("managedFields".into(), raw.clone());
    }
    apply::track_update(Some(normalized), &mut with_fields, &target, who, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn protobuf_deployment() -> Vec<u8> {
        use k8s_pb::api::apps::v1 as apps;
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
        let labels: std::collections::BTreeMap<String, String> = [("a".into(), "b".into())].into();
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta { name: Some("web".into()), labels: labels.clone(), ..Default::default() }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector { match_labels: labels.clone(), ..Default::default() }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta { labels, ..Default::default() }),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("c".into()),
                            image: Some("x".into()),
                            ports: vec![core::ContainerPort { container_port: Some(80), ..Default::default() }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        crate::protobuf::envelope("apps/v1", "Deployment", d.encode_to_vec())
    }

    /// Inputs built from valid objects by byte-level mutation, plus plain noise: a cheap,
    /// deterministic stand-in for the fuzzer that runs on every CI build.
    #[test]
    fn decode_path_survives_mutated_and_random_inputs() {
        let registry = Registry::builtin();
        let seeds: Vec<Vec<u8>> = vec![
            br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"a":"b"}},"spec":{"replicas":2,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":80}]}]}}}}"#.to_vec(),
            br#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"b","resources":{"limits":{"cpu":"1"}}}]},"status":{"containerStatuses":[{"name":"a","state":{"waiting":{"reason":"X"}}}]}}"#.to_vec(),
            b"apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n    nodePort: 30000\n".to_vec(),
            br#"{"metadata":{"name":"a","finalizers":["x/y"],"ownerReferences":[{"apiVersion":"v1","kind":"K","name":"n","uid":"u","controller":true}]},"data":{"k":"v"},"stringData":{"s":"t"},"type":"Opaque"}"#.to_vec(),
            b"app in (a, b), !c, d!=e, f>3".to_vec(),
            b"{\"metadata\":{\"resourceVersion\":\"1\"}}".to_vec(),
            protobuf_deployment(),
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const INTERESTING: &[u8] = b"{}[]\":,\\-0123456789.eE+ \n\ttrue\x00\xff";
        for round in 0..4000 {
            let mut input = seeds[round % seeds.len()].clone();
            let mutations = 1 + (rand() % 8) as usize;
            for _ in 0..mutations {
                if input.is_empty() {
                    input.push(b'{');
                }
                let at = (rand() as usize) % input.len();
                match rand() % 5 {
                    0 => input[at] = INTERESTING[(rand() as usize) % INTERESTING.len()],
                    1 => {
                        input.remove(at);
                    }
                    2 => input.insert(at, INTERESTING[(rand() as usize) % INTERESTING.len()]),
                    3 => {
                        let end = (at + (rand() as usize) % 16).min(input.len());
                        let chunk = input[at..end].to_vec();
                        input.splice(at..at, chunk);
                    }
                    _ => input.truncate(at),
                }
            }
            decode_path(&registry, &input);
        }
        for len in [0usize, 1, 7, 64, 512] {
            let noise: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            decode_path(&registry, &noise);
        }
        // Deep nesting must be refused, not overflow the stack.
        decode_path(&registry, &b"[".repeat(100_000));
        decode_path(&registry, &b"a:\n ".repeat(10_000));
    }
}
