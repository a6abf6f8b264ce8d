//! Label selectors as the apiserver and upstream's controllers read them: `matchLabels` and
//! `matchExpressions` (In, NotIn, Exists, DoesNotExist) all must hold; an empty selector matches
//! everything, a missing one nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let plain = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    plain
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

/// A selector matching nothing at all (no requirements) is "everything"; upstream's workload
/// controllers refuse it, so they ask this first.
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether a workload's `selector` takes the object with `meta`'s labels: an empty selector
/// takes nothing.
pub fn selects(selector: &LabelSelector, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    !is_empty(selector) && matches(selector, meta.labels.as_ref().unwrap_or(&BTreeMap::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "web".to_string()), ("tier".to_string(), "front".to_string())].into();
        let table = [
            (serde_json::json!({}), true),
            (serde_json::json!({"matchLabels": {"app": "web"}}), true),
            (serde_json::json!({"matchLabels": {"app": "db"}}), false),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "x"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
                false,
            ),
            (serde_json::json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}), true),
            (serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}), true),
            (serde_json::json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}), false),
            (
                serde_json::json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
                false,
            ),
        ];
        for (s, want) in table {
            assert_eq!(matches(&sel(s.clone()), &labels), want, "{s}");
        }
        assert!(is_empty(&sel(serde_json::json!({}))));
    }
}
