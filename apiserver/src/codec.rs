//! Bytes in and out: request bodies to JSON values, objects to and from their stored form.
//!
//! Stored form: compact JSON with `metadata` as the first key and no `resourceVersion` (the
//! revision is etcd's, so it cannot be inside the value written). Serving a stored object only
//! splices `"resourceVersion":"<rev>"` in after `{"metadata":{`, so GET, LIST and watch never
//! parse objects they do not need to look into. Values written by anything else are parsed.
//!
//! Request bodies: JSON (also when no Content-Type is sent, as the Python client does) or YAML.
//! Strict field validation finds duplicate fields while parsing and unknown fields by comparing
//! the body with what the Kubernetes type kept of it.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Request bodies above this size are refused with 413, as upstream limits them.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    /// `application/vnd.kubernetes.protobuf`: see [`crate::protobuf`].
    Protobuf,
}

/// The media type of a request body, without parameters, lowercased.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// For create and update: which decoder a Content-Type selects.
pub fn object_body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    match media_type(content_type).as_str() {
        "" | "application/json" | "*/*" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyFormat::Yaml),
        "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
        other => {
            Err(unsupported(other, &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]))
        }
    }
}

pub fn unsupported(media: &str, accepted: &[&str]) -> ApiError {
    ApiError::UnsupportedMediaType(format!(
        "the body of the request was in an unknown format - accepted media types include: {} (got \"{media}\")",
        accepted.join(", ")
    ))
}

/// How unknown and duplicate fields are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other}; valid values are Ignore, Warn and Strict"
            ))),
        }
    }
}

/// A parsed body and the duplicate fields seen while parsing it.
#[derive(Debug)]
pub struct Decoded {
    pub value: Value,
    pub duplicates: Vec<String>,
}

pub fn decode_body(bytes: &[u8], format: BodyFormat) -> Result<Decoded, ApiError> {
    match format {
        BodyFormat::Json => {
            let mut duplicates = Vec::new();
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let value = StrictValue { path: String::new(), duplicates: &mut duplicates }
                .deserialize(&mut de)
                .and_then(|v| de.end().map(|_| v))
                .map_err(|e| ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}")))?;
            Ok(Decoded { value, duplicates })
        }
        BodyFormat::Protobuf => Ok(Decoded { value: crate::protobuf::decode(bytes)?, duplicates: Vec::new() }),
        BodyFormat::Yaml => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| ApiError::BadRequest("yaml: invalid UTF-8 in body".into()))?;
            let value: Value = serde_saphyr::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("yaml: {}", first_line(&e.to_string()))))?;
            Ok(Decoded { value, duplicates: Vec::new() })
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Builds a `Value` like serde_json does, and records the path of every repeated key.
struct StrictValue<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = StrictValue { path: format!("{}[{}]", self.path, out.len()), duplicates: &mut *self.duplicates };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = child(&self.path, &key);
            let v = map.next_value_seed(StrictValue { path: path.clone(), duplicates: &mut *self.duplicates })?;
            if out.insert(key, v).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Paths present (and not null) in `input` that the typed round trip dropped.
pub fn unknown_fields(input: &Value, normalized: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, normalized, "", &mut out);
    out
}

fn walk_unknown(input: &Value, norm: &Value, path: &str, out: &mut Vec<String>) {
    match (input, norm) {
        (Value::Object(i), Value::Object(n)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = child(path, k);
                match n.get(k) {
                    Some(nv) => walk_unknown(v, nv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(n)) => {
            for (idx, (iv, nv)) in i.iter().zip(n).enumerate() {
                walk_unknown(iv, nv, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

/// The field problems strict validation reports, in upstream's wording.
pub fn field_problems(unknown: &[String], duplicates: &[String]) -> Vec<String> {
    let dup: BTreeSet<&String> = duplicates.iter().collect();
    unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .chain(dup.into_iter().map(|f| format!("duplicate field \"{f}\"")))
        .collect()
}

/// The stored form of an object: `metadata` first, without `resourceVersion`.
pub fn encode_for_storage(obj: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(b'{');
    let map = obj.as_object();
    let mut first = true;
    if let Some(m) = map.and_then(|m| m.get("metadata")).and_then(Value::as_object) {
        let mut meta = m.clone();
        meta.remove("resourceVersion");
        meta.remove("selfLink");
        out.extend_from_slice(b"\"metadata\":");
        write_json(&mut out, &Value::Object(meta));
        first = false;
    }
    if let Some(map) = map {
        for (k, v) in map {
            if k == "metadata" {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_json(&mut out, &Value::String(k.clone()));
            out.push(b':');
            write_json(&mut out, v);
        }
    }
    out.push(b'}');
    out
}

fn write_json(out: &mut Vec<u8>, v: &Value) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

const META_PREFIX: &[u8] = b"{\"metadata\":{";

/// Appends `n` in decimal without allocating (this runs once per object of a LIST).
fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// The object as served: the stored bytes with `metadata.resourceVersion` set to `revision`.
pub fn render_stored(stored: &[u8], revision: i64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(stored.len() + 32);
    render_stored_into(&mut out, stored, revision)?;
    Ok(out)
}

/// [`render_stored`] appending to `out`, so a list is built in one buffer.
pub fn render_stored_into(out: &mut Vec<u8>, stored: &[u8], revision: i64) -> Result<(), ApiError> {
    if stored.starts_with(META_PREFIX) && stored.len() > META_PREFIX.len() + 1 {
        let rest = &stored[META_PREFIX.len()..];
        out.extend_from_slice(META_PREFIX);
        out.extend_from_slice(b"\"resourceVersion\":\"");
        push_decimal(out, revision);
        out.push(b'"');
        if rest[0] != b'}' {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        return Ok(());
    }
    let value = decode_stored(stored, revision)?;
    write_json(out, &value);
    Ok(())
}

/// The object as a value, with `metadata.resourceVersion` set to `revision`.
pub fn decode_stored(stored: &[u8], revision: i64) -> Result<Value, ApiError> {
    let mut value: Value = serde_json::from_slice(stored).map_err(|e| {
        tracing::error!(error = %e, "Stored object is not valid JSON");
        ApiError::Internal("stored object could not be decoded".into())
    })?;
    crate::meta::meta_mut(&mut value).insert("resourceVersion".into(), Value::String(revision.to_string()));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_objects_put_metadata_first_and_drop_the_resource_version() {
        let obj = json!({"apiVersion": "v1", "data": {"a": "b"}, "kind": "ConfigMap", "metadata": {"name": "x", "resourceVersion": "9"}});
        let stored = encode_for_storage(&obj);
        assert!(stored.starts_with(b"{\"metadata\":{\"name\":\"x\"}"), "{}", String::from_utf8_lossy(&stored));
        let served: Value = serde_json::from_slice(&render_stored(&stored, 42).expect("renders")).expect("json");
        assert_eq!(served["metadata"]["resourceVersion"], "42");
        assert_eq!(served["data"]["a"], "b");
        assert_eq!(served["kind"], "ConfigMap");
    }

    #[test]
    fn decimals_are_written_like_to_string() {
        for n in [0i64, 7, 10, 1234567890, i64::MAX, -1, i64::MIN] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).expect("utf8"), n.to_string());
        }
    }

    #[test]
    fn foreign_stored_values_are_parsed_instead_of_spliced() {
        let stored = br#"{"kind":"ConfigMap","metadata":{"name":"x"}}"#;
        let served: Value = serde_json::from_slice(&render_stored(stored, 7).expect("renders")).expect("json");
        assert_eq!(served["metadata"]["resourceVersion"], "7");
        let empty_meta = br#"{"metadata":{},"kind":"X"}"#;
        let served: Value = serde_json::from_slice(&render_stored(empty_meta, 3).expect("renders")).expect("json");
        assert_eq!(served["metadata"]["resourceVersion"], "3");
    }

    #[test]
    fn duplicate_fields_are_found_with_their_paths() {
        let d = decode_body(br#"{"a":1,"spec":{"r":1,"r":2,"list":[{"x":1,"x":2}]},"a":3}"#, BodyFormat::Json)
            .expect("parses");
        assert_eq!(d.value["a"], 3, "last one wins, like upstream in non-strict modes");
        assert_eq!(d.duplicates, vec!["spec.r", "spec.list[0].x", "a"]);
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [&b"{"[..], b"{\"a\":}", b"nope", b"{} trailing", b""] {
            let err = decode_body(body, BodyFormat::Json).expect_err("malformed");
            assert_eq!(err.code(), 400);
        }
        let err = decode_body(b"a: [1, 2", BodyFormat::Yaml).expect_err("malformed yaml");
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn yaml_bodies_decode_to_the_same_json() {
        let d =
            decode_body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  k: v\n", BodyFormat::Yaml)
                .expect("yaml");
        assert_eq!(
            d.value,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn unknown_fields_are_what_the_type_dropped() {
        let input = json!({"spec": {"replicas": 1, "bogus": true, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}, "metadata": {"creationTimestamp": null}});
        let norm =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}, "metadata": {}});
        assert_eq!(unknown_fields(&input, &norm), vec!["spec.bogus", "spec.template.spec.containers[0].imagee"]);
    }

    #[test]
    fn content_types_select_decoders() {
        assert_eq!(object_body_format(None).expect("json"), BodyFormat::Json);
        assert_eq!(object_body_format(Some("application/json; charset=utf-8")).expect("json"), BodyFormat::Json);
        assert_eq!(object_body_format(Some("application/yaml")).expect("yaml"), BodyFormat::Yaml);
        assert_eq!(object_body_format(Some("text/plain")).expect_err("415").code(), 415);
        assert_eq!(object_body_format(Some("application/vnd.kubernetes.protobuf")).expect("pb"), BodyFormat::Protobuf);
    }
}
