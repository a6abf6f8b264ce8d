//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as client-go 1.32+ and so
//! kubectl 1.32+ send them for `create namespace|configmap|secret|deployment|...`.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` envelope naming the object's apiVersion
//! and kind around the object's bytes. The object is decoded with `k8s-pb`'s prost types and
//! turned into the JSON the rest of the server works on: the per-message conversions in
//! [`generated`] (from `tools/gen_protobuf_json.py`), and the types whose JSON form differs from
//! their fields, below. Proto2 sets every Go field, so empty strings and zero timestamps are left
//! out, as Go's `omitempty` would.

mod generated;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value};

use crate::error::ApiError;

const MAGIC: &[u8] = b"k8s\0";

pub trait ToJson {
    fn to_json(&self) -> Value;
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}
impl ToJson for i32 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}
impl ToJson for i64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}
impl ToJson for bool {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}
impl ToJson for f64 {
    fn to_json(&self) -> Value {
        serde_json::Number::from_f64(*self).map_or(Value::Null, Value::Number)
    }
}

/// Inserts `v` unless it says "not set" (null, or an empty string).
pub(crate) fn put(m: &mut Map<String, Value>, key: &str, v: Value) {
    match &v {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        _ => {
            m.insert(key.to_string(), v);
        }
    }
}

pub(crate) fn bytes_json(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

fn time(seconds: Option<i64>, nanos: Option<i32>, micros: bool) -> Value {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if s == 0 && n == 0 {
        return Value::Null;
    }
    match jiff::Timestamp::new(s, n) {
        Ok(t) if micros => Value::String(t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()),
        Ok(t) => Value::String(crate::meta::format_time(t)),
        Err(_) => Value::Null,
    }
}

use k8s_pb::apimachinery::pkg;

impl ToJson for pkg::apis::meta::v1::Time {
    fn to_json(&self) -> Value {
        time(self.seconds, self.nanos, false)
    }
}
impl ToJson for pkg::apis::meta::v1::MicroTime {
    fn to_json(&self) -> Value {
        time(self.seconds, self.nanos, true)
    }
}
impl ToJson for pkg::apis::meta::v1::Duration {
    /// Go's `time.Duration` string form, e.g. `1h2m3s`, `1.5s`.
    fn to_json(&self) -> Value {
        let ns = self.duration.unwrap_or(0);
        Value::String(go_duration(ns))
    }
}
impl ToJson for pkg::apis::meta::v1::FieldsV1 {
    fn to_json(&self) -> Value {
        self.raw.as_deref().and_then(|r| serde_json::from_slice(r).ok()).unwrap_or(Value::Null)
    }
}
impl ToJson for pkg::api::resource::Quantity {
    fn to_json(&self) -> Value {
        self.string.clone().map_or(Value::Null, Value::String)
    }
}
impl ToJson for pkg::util::intstr::IntOrString {
    fn to_json(&self) -> Value {
        match self.r#type.unwrap_or(0) {
            1 => self.str_val.clone().map_or(Value::Null, Value::String),
            _ => Value::from(self.int_val.unwrap_or(0)),
        }
    }
}
impl ToJson for pkg::runtime::RawExtension {
    fn to_json(&self) -> Value {
        self.raw.as_deref().and_then(|r| serde_json::from_slice(r).ok()).unwrap_or(Value::Null)
    }
}
impl ToJson for k8s_pb::api::authentication::v1::ExtraValue {
    fn to_json(&self) -> Value {
        self.items.iter().map(|s| Value::String(s.clone())).collect()
    }
}
impl ToJson for k8s_pb::api::authorization::v1::ExtraValue {
    fn to_json(&self) -> Value {
        self.items.iter().map(|s| Value::String(s.clone())).collect()
    }
}

fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        return format!("{sign}{}ms", ns as f64 / 1e6);
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = rest as f64 / 1e9;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{secs}s"));
    out
}

/// The envelope `runtime.Unknown`: field 1 TypeMeta (1 apiVersion, 2 kind), field 2 raw.
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// A protobuf body as the JSON object it carries, with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("the protobuf body could not be decoded: {why}"));
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with the k8s\\0 prefix".into()))?;
    let envelope = Unknown::decode(rest).map_err(|e| bad(e.to_string()))?;
    if envelope.content_encoding.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(bad(format!("content encoding {:?} is not supported", envelope.content_encoding)));
    }
    let tm = envelope.type_meta.unwrap_or_default();
    let (api_version, kind) = (tm.api_version.unwrap_or_default(), tm.kind.unwrap_or_default());
    let raw = envelope.raw.unwrap_or_default();
    match generated::decode(&api_version, &kind, &raw) {
        Some(Ok(Value::Object(mut m))) => {
            m.insert("apiVersion".into(), Value::String(api_version));
            m.insert("kind".into(), Value::String(kind));
            Ok(Value::Object(m))
        }
        Some(Ok(_)) => Err(bad("not an object".into())),
        Some(Err(e)) => Err(bad(e.to_string())),
        None => Err(ApiError::UnsupportedMediaType(format!(
            "protobuf bodies of {kind} ({api_version}) are not decoded by this server; send JSON or YAML"
        ))),
    }
}

/// A body as client-go builds it: magic, then the envelope around the object's bytes.
#[cfg(test)]
pub(crate) fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_as_kubectl_1_33_sends_it() {
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
        // Proto2 carries every Go field: empty strings, generation 0, an empty timestamp.
        let ns = core::Namespace {
            metadata: Some(meta::ObjectMeta {
                name: Some("team-a".into()),
                generate_name: Some(String::new()),
                namespace: Some(String::new()),
                uid: Some(String::new()),
                resource_version: Some(String::new()),
                generation: Some(0),
                creation_timestamp: Some(meta::Time::default()),
                ..Default::default()
            }),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus { phase: Some(String::new()), ..Default::default() }),
        };
        let v = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).expect("decodes");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"], serde_json::json!({"name": "team-a", "generation": 0}));
        assert_eq!(v["status"], serde_json::json!({}));
    }

    #[test]
    fn special_types_take_their_json_forms() {
        use k8s_pb::api::core::v1 as core;
        let secret = core::Secret {
            data: [("k".to_string(), b"value".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec())).expect("decodes");
        assert_eq!(v["data"]["k"], "dmFsdWU=");
        let port = core::ServicePort {
            port: Some(80),
            target_port: Some(pkg::util::intstr::IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some("http".into()),
            }),
            ..Default::default()
        };
        let svc = core::Service {
            spec: Some(core::ServiceSpec { ports: vec![port], ..Default::default() }),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Service", svc.encode_to_vec())).expect("decodes");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], "http");
        let t = pkg::apis::meta::v1::MicroTime { seconds: Some(1_700_000_000), nanos: Some(123_456_000) };
        assert_eq!(t.to_json(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
    }

    #[test]
    fn volumes_are_flattened_as_go_inlines_them() {
        use k8s_pb::api::core::v1 as core;
        let vol = core::Volume {
            name: Some("cfg".into()),
            volume_source: Some(core::VolumeSource {
                config_map: Some(core::ConfigMapVolumeSource {
                    local_object_reference: Some(core::LocalObjectReference { name: Some("settings".into()) }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        assert_eq!(vol.to_json(), serde_json::json!({"name": "cfg", "configMap": {"name": "settings"}}));
    }

    #[test]
    fn a_priority_class_as_client_go_sends_it() {
        use k8s_pb::api::scheduling::v1 as scheduling;
        use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
        let pc = scheduling::PriorityClass {
            metadata: Some(meta::ObjectMeta { name: Some("high".into()), ..Default::default() }),
            value: Some(1000),
            global_default: Some(false),
            description: Some("d".into()),
            preemption_policy: Some("Never".into()),
        };
        let v = decode(&envelope("scheduling.k8s.io/v1", "PriorityClass", pc.encode_to_vec())).expect("decodes");
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"},
                "value": 1000, "globalDefault": false, "description": "d", "preemptionPolicy": "Never"})
        );
    }

    #[test]
    fn garbage_is_a_bad_request_and_unknown_kinds_unsupported() {
        assert_eq!(decode(b"{}").expect_err("no magic").code(), 400);
        assert_eq!(decode(b"k8s\0\xff\xff\xff").expect_err("garbage").code(), 400);
        let e = decode(&envelope("example.com/v1", "Widget", vec![])).expect_err("unknown");
        assert_eq!(e.code(), 415);
    }
}
