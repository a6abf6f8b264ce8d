//! Reading and writing `metadata` on objects held as JSON, and the time format the API uses.
//!
//! The generic REST code works on `serde_json::Value` so one code path serves every kind; these
//! helpers keep the JSON poking in one place.

use serde_json::{Map, Value};

/// RFC 3339 UTC to the second, as every Kubernetes timestamp is written.
pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// The `metadata` map, created when missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("just made an object");
    let m = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    meta(obj)?.get("labels")?.as_object()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    meta(obj).and_then(|m| m.get("deletionTimestamp")).is_some_and(|v| !v.is_null())
}

/// Follows a dotted path (`spec.nodeName`) and renders the value as a field selector compares
/// it: strings as they are, numbers and booleans in their text form, absent as "".
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Five characters from the alphabet upstream uses for `generateName`, which avoids vowels and
/// look-alike characters so generated names never spell words.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A random (v4) UUID from the thread-local generator: no system call per object.
pub fn new_uid() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// `kubectl get`'s AGE: the same coarsening as upstream's human-readable durations.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        return if s % 60 == 0 { format!("{minutes}m") } else { format!("{minutes}m{}s", s % 60) };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = s / 3600;
    if hours < 8 {
        return if minutes % 60 == 0 { format!("{hours}h") } else { format!("{hours}h{}m", minutes % 60) };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return if hours % 24 == 0 { format!("{days}d") } else { format!("{days}d{}h", hours % 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return if days % 365 == 0 { format!("{years}y") } else { format!("{years}y{}d", days % 365) };
    }
    format!("{years}y")
}

/// Age of an object from its `creationTimestamp`, or `<unknown>`.
pub fn age(obj: &Value, now: jiff::Timestamp) -> String {
    translate_timestamp(meta_str(obj, "creationTimestamp"), now)
}

pub fn translate_timestamp(ts: &str, now: jiff::Timestamp) -> String {
    match parse_time(ts) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_durations_coarsen_like_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (49 * 3600, "2d1h"),
            (8 * 86400, "8d"),
            (2 * 365 * 86400, "2y"),
            (2 * 365 * 86400 + 86400, "2y1d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn field_values_render_scalars_as_text() {
        let pod = json!({"spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"replicas": 3}});
        assert_eq!(field_value(&pod, "spec.nodeName"), "n1");
        assert_eq!(field_value(&pod, "spec.hostNetwork"), "true");
        assert_eq!(field_value(&pod, "status.replicas"), "3");
        assert_eq!(field_value(&pod, "status.phase"), "");
    }

    #[test]
    fn random_suffixes_use_only_the_safe_alphabet() {
        for _ in 0..100 {
            let s = random_suffix();
            assert_eq!(s.len(), 5);
            assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{s}");
        }
    }

    #[test]
    fn uids_are_distinct_version_4_uuids() {
        let a = new_uid();
        assert_ne!(a, new_uid());
        let parsed = uuid::Uuid::parse_str(&a).expect("uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn times_are_rfc3339_to_the_second() {
        let t: jiff::Timestamp = "2026-11-22T02:19:47.123Z".parse().expect("parses");
        assert_eq!(format_time(t), "2026-11-22T02:19:47Z");
    }
}
