//! Status writes as JSON merge patches of `status` alone: a controller's status write never
//! conflicts with a spec change made meanwhile (a replace would, and be retried), and a field
//! the new status drops is sent as null so it is removed.

use serde::Serialize;

pub fn status_patch<T: Serialize>(old: Option<&T>, new: &T) -> serde_json::Value {
    let mut status = serde_json::to_value(new).unwrap_or_default();
    let old = old.and_then(|o| serde_json::to_value(o).ok());
    if let (Some(status), Some(serde_json::Value::Object(old))) = (status.as_object_mut(), old) {
        for k in old.keys() {
            status.entry(k.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_fields_are_sent_as_null() {
        let old = serde_json::json!({"replicas": 3, "readyReplicas": 2});
        let new = serde_json::json!({"replicas": 1});
        assert_eq!(
            status_patch(Some(&old), &new),
            serde_json::json!({"status": {"replicas": 1, "readyReplicas": null}})
        );
        assert_eq!(status_patch(None, &new), serde_json::json!({"status": {"replicas": 1}}));
    }
}
