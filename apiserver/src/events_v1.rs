//! `events.k8s.io/v1` Events: the same objects as core `v1` Events, under other field names.
//!
//! As upstream, both APIs read and write one set of objects (`/registry/events/`), stored in the
//! core form: an event a controller records through `events.k8s.io/v1` (client-go's new
//! recorder, kube-rs's `Recorder`) is what `kubectl get events` and `kubectl describe` show, and
//! a kubelet's core event is listed here too. [`to_core`] and [`from_core`] convert at the
//! storage boundary ([`crate::resources::StoredAs`]); everything else (validation, field
//! selectors, Table rows, patches) sees the `events.k8s.io/v1` form.

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::error::Cause;
use crate::resources::{StoredAs, Strategy};
use crate::table::{self, TableDef};

/// `events.k8s.io/v1` field -> core `v1` field; the others have one name in both.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(v: &Value, api_version: &str, map: impl Fn(&str) -> Option<&'static str>) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), "Event".into());
    for (k, val) in v.as_object().into_iter().flatten() {
        if k == "apiVersion" || k == "kind" || val.is_null() {
            continue;
        }
        out.insert(map(k).map(str::to_string).unwrap_or_else(|| k.clone()), val.clone());
    }
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event in the core `v1` form it is stored in.
pub fn to_core(v: &Value) -> Value {
    rename(v, "v1", |k| RENAMED.iter().find(|(new, _)| *new == k).map(|(_, old)| *old))
}

/// A stored core `v1` Event as `events.k8s.io/v1` serves it.
pub fn from_core(v: &Value) -> Value {
    rename(v, "events.k8s.io/v1", |k| RENAMED.iter().find(|(_, old)| *old == k).map(|(new, _)| *new))
}

pub static STORED_AS_CORE: StoredAs = StoredAs { to_storage: to_core, from_storage: from_core };

/// Field selectors, on the `events.k8s.io/v1` names.
pub const FIELDS: &[(&str, &str)] = &[
    ("regarding.kind", "regarding.kind"),
    ("regarding.namespace", "regarding.namespace"),
    ("regarding.name", "regarding.name"),
    ("regarding.uid", "regarding.uid"),
    ("regarding.apiVersion", "regarding.apiVersion"),
    ("regarding.resourceVersion", "regarding.resourceVersion"),
    ("regarding.fieldPath", "regarding.fieldPath"),
    ("reason", "reason"),
    ("reportingController", "reportingController"),
    ("type", "type"),
];

/// The core Event columns, read from the core form.
pub const TABLE: TableDef =
    TableDef { columns: table::EVENT.columns, row: |o, now| (table::EVENT.row)(&to_core(o), now) };

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn set(v: &Value, field: &str) -> bool {
    v.get(field).is_some_and(|f| !f.is_null())
}

/// `field` is required and at most `limit` bytes.
fn bounded(v: &Value, field: &str, limit: usize, causes: &mut Vec<Cause>) {
    let s = text(v, field);
    if s.is_empty() {
        causes.push(Cause::required(field));
    } else if s.len() > limit {
        causes.push(Cause::invalid(field, "", format!("can have at most {limit} characters")));
    }
}

/// A series counts at least two occurrences and says when the last was.
fn validate_series(v: &Value, causes: &mut Vec<Cause>) {
    let Some(series) = v.get("series").filter(|s| !s.is_null()) else { return };
    let count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    if count < 2 {
        causes.push(Cause::invalid("series.count", count, "should be at least 2"));
    }
    let last = series.get("lastObservedTime").and_then(Value::as_str).unwrap_or("");
    if last.is_empty() || last.parse::<Timestamp>().is_err() {
        causes.push(Cause::required("series.lastObservedTime"));
    }
}

pub struct EventsV1Strategy;
impl Strategy for EventsV1Strategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        let ns = crate::meta::namespace(obj);
        let regarding_ns = obj.pointer("/regarding/namespace").and_then(Value::as_str).unwrap_or("");
        if !regarding_ns.is_empty() && regarding_ns != ns {
            causes.push(Cause::invalid("regarding.namespace", regarding_ns, "does not match event.namespace"));
        }
        if !set(obj, "eventTime") {
            causes.push(Cause::required("eventTime"));
        }
        let ty = text(obj, "type");
        if ty != "Normal" && ty != "Warning" {
            causes.push(Cause::invalid("type", ty, format!("has invalid value: {ty}")));
        }
        bounded(obj, "reportingController", 316, &mut causes);
        bounded(obj, "reportingInstance", 128, &mut causes);
        bounded(obj, "action", 128, &mut causes);
        bounded(obj, "reason", 128, &mut causes);
        if text(obj, "note").len() > 1024 {
            causes.push(Cause::invalid("note", "", "can have at most 1024 characters"));
        }
        for field in ["deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"] {
            let given = obj.get(field).is_some_and(|f| !f.is_null() && f != &Value::Object(Map::new()) && f != 0);
            if given {
                causes.push(Cause::invalid(field, "", "needs to be unset"));
            }
        }
        validate_series(obj, &mut causes);
        causes
    }

    /// What an event says happened is fixed once recorded; its note, series and metadata may
    /// change.
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        for field in ["regarding", "related", "reason", "type", "reportingController", "reportingInstance", "action"] {
            let (n, o) = (new.get(field).filter(|v| !v.is_null()), old.get(field).filter(|v| !v.is_null()));
            if n != o {
                causes.push(Cause::immutable(field, n.map(Value::to_string).unwrap_or_default()));
            }
        }
        let time = |v: &Value| v.get("eventTime").and_then(Value::as_str).and_then(|s| s.parse::<Timestamp>().ok());
        if time(new) != time(old) {
            causes.push(Cause::immutable("eventTime", text(new, "eventTime")));
        }
        if new.get("series") != old.get("series") {
            validate_series(new, &mut causes);
        }
        causes
    }

    fn table(&self) -> Option<&'static TableDef> {
        Some(&TABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "namespace": "ns", "name": "p"},
            "note": "it happened", "reason": "Test", "type": "Normal", "action": "Do",
            "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}
        })
    }

    #[test]
    fn the_two_forms_convert_both_ways_without_loss() {
        let core = to_core(&event());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "it happened");
        assert_eq!(core["reportingComponent"], "example.com/ctl");
        assert_eq!(core["reportingInstance"], "ctl-1");
        assert_eq!(core["series"]["count"], 2);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(from_core(&core), event());

        let kubelet = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "k", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "Started", "reason": "Started",
            "source": {"component": "kubelet", "host": "n1"}, "count": 3, "eventTime": null,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:09Z", "type": "Normal"});
        let v1 = from_core(&kubelet);
        assert_eq!(v1["deprecatedSource"]["host"], "n1");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedLastTimestamp"], "2026-01-01T00:00:09Z");
        assert_eq!(v1["note"], "Started");
        assert!(v1.get("eventTime").is_none(), "nulls are dropped");
    }

    #[test]
    fn creates_need_what_the_new_api_requires_and_no_deprecated_fields() {
        assert!(EventsV1Strategy.validate(&event()).is_empty(), "{:?}", EventsV1Strategy.validate(&event()));
        let fields = |v: &Value| -> Vec<String> { EventsV1Strategy.validate(v).into_iter().map(|c| c.field).collect() };
        let mut bare = json!({"metadata": {"name": "e", "namespace": "ns"}, "type": "Sometimes"});
        assert_eq!(
            fields(&bare),
            ["eventTime", "type", "reportingController", "reportingInstance", "action", "reason"]
        );
        bare = event();
        bare["deprecatedCount"] = json!(4);
        bare["regarding"]["namespace"] = json!("other");
        bare["series"]["count"] = json!(1);
        bare["note"] = json!("x".repeat(1025));
        assert_eq!(fields(&bare), ["regarding.namespace", "note", "deprecatedCount", "series.count"]);
    }

    #[test]
    fn updates_change_the_note_and_series_but_not_what_happened() {
        let old = event();
        let mut new = event();
        new["note"] = json!("patched");
        new["series"] = json!({"count": 100, "lastObservedTime": "2026-01-01T00:02:00.000000Z"});
        assert!(EventsV1Strategy.validate_update(&new, &old).is_empty());
        new["reason"] = json!("Other");
        new["regarding"]["name"] = json!("q");
        new["series"]["count"] = json!(0);
        let fields: Vec<String> = EventsV1Strategy.validate_update(&new, &old).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["regarding", "reason", "series.count"]);
    }

    #[test]
    fn table_rows_are_the_core_event_rows() {
        let now = Timestamp::now();
        assert_eq!((TABLE.row)(&event(), now), (table::EVENT.row)(&to_core(&event()), now));
        assert_eq!(TABLE.columns.len(), table::EVENT.columns.len());
    }
}
