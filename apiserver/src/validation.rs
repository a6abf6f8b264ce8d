//! Validation shared by every kind: names, labels, annotations, and `ObjectMeta` on create and
//! update. Kind-specific rules live with each kind's strategy in `kinds`.
//!
//! Each check returns the reason text on failure; callers wrap it in a [`Cause`] with the field
//! path, so a 422 names every broken field at once.

use serde_json::Value;

use crate::error::Cause;
use crate::meta;
use crate::resources::{NameRule, ResourceInfo};

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// Total size of all annotations on one object.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub fn dns1123_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > DNS1123_LABEL_MAX {
        return Err(format!("must be 1 to {DNS1123_LABEL_MAX} characters"));
    }
    let ok =
        is_lower_alnum(b[0]) && is_lower_alnum(b[b.len() - 1]) && b.iter().all(|&c| is_lower_alnum(c) || c == b'-');
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')".into())
    }
}

pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be 1 to {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    let ok = s.split('.').all(|part| {
        let b = part.as_bytes();
        !b.is_empty()
            && is_lower_alnum(b[0])
            && is_lower_alnum(b[b.len() - 1])
            && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')".into())
    }
}

pub fn path_segment_name(s: &str) -> Result<(), String> {
    if s == "." || s == ".." {
        return Err(format!("may not be '{s}'"));
    }
    if s.contains('/') || s.contains('%') {
        return Err("may not contain '/' or '%'".into());
    }
    Ok(())
}

pub fn object_name(rule: NameRule, s: &str) -> Result<(), String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(s),
        NameRule::Label => dns1123_label(s),
        NameRule::PathSegment => path_segment_name(s),
    }
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= QUALIFIED_NAME_MAX
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Label and annotation keys: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 characters.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if is_name_part(name) {
        Ok(())
    } else {
        Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters (e.g. 'MyName', 'my.name' or '123-abc')".into())
    }
}

pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > LABEL_VALUE_MAX || !is_name_part(s) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters".into());
    }
    Ok(())
}

/// Keys of ConfigMap and Secret data.
pub fn config_map_key(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be 1 to {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if s == "." || s == ".." || s.starts_with("..") {
        return Err("must not be '.' or '..' or start with '..'".into());
    }
    if s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        Ok(())
    } else {
        Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name')".into())
    }
}

/// Generic `metadata` checks for create and update. `name` is the final name (after
/// `generateName`).
pub fn object_meta(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta::name(obj);
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if let Err(e) = object_name(info.name_rule, name) {
        causes.push(Cause::invalid("metadata.name", name, e));
    }
    let Some(m) = meta::meta(obj) else {
        return causes;
    };
    if let Some(gn) = m.get("generateName").and_then(Value::as_str)
        && !gn.is_empty()
        && info.name_rule != NameRule::PathSegment
    {
        // A prefix may end in '-'; check it as a name with a trailing character.
        let probe = format!("{}a", gn);
        if let Err(e) = object_name(info.name_rule, &probe) {
            causes.push(Cause::invalid("metadata.generateName", gn, e));
        }
    }
    if let Some(labels) = m.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Err(e) = qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", k, e));
            }
            match v.as_str() {
                Some(v) => {
                    if let Err(e) = label_value(v) {
                        causes.push(Cause::invalid(format!("metadata.labels.{k}"), v, e));
                    }
                }
                None => causes.push(Cause::invalid(format!("metadata.labels.{k}"), v, "must be a string")),
            }
        }
    }
    if let Some(ann) = m.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            if let Err(e) = qualified_name(&k.to_ascii_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", k, e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX_BYTES {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
                field: "metadata.annotations".into(),
            });
        }
    }
    if let Some(fins) = m.get("finalizers").and_then(Value::as_array) {
        for (i, f) in fins.iter().enumerate() {
            let f = f.as_str().unwrap_or_default();
            if let Err(e) = qualified_name(f) {
                causes.push(Cause::invalid(format!("metadata.finalizers[{i}]"), f, e));
            }
        }
    }
    if let Some(owners) = m.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, o) in owners.iter().enumerate() {
            for field in ["apiVersion", "kind", "name", "uid"] {
                if o.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("metadata.ownerReferences[{i}].{field}")));
                }
            }
            if o.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(Cause::invalid(
                "metadata.ownerReferences",
                "",
                "Only one reference can have Controller set to true",
            ));
        }
    }
    causes
}

/// Fields of `metadata` an update may not change.
pub fn object_meta_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let (n, o) = (meta::meta_str(new, field), meta::meta_str(old, field));
        if n != o {
            causes.push(Cause::immutable(format!("metadata.{field}"), n));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_rfc1123() {
        for ok in ["a", "web-1", "a.b.c", "0abc", &"a".repeat(63)] {
            assert!(dns1123_label(ok).is_ok() || ok.contains('.'), "{ok}");
            assert!(dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a..b", ".a", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["app", "app.kubernetes.io/name", "k8s.io/x_y.z", "A-1"] {
            assert!(qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "a/", "Bad_Prefix/x", "-x", "x-", &"a".repeat(64)] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3-x").is_ok());
        assert!(label_value("has space").is_err());
        assert!(label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn config_keys() {
        assert!(config_map_key("app.properties").is_ok());
        assert!(config_map_key("KEY_NAME").is_ok());
        assert!(config_map_key("..data").is_err());
        assert!(config_map_key("a/b").is_err());
    }
}
