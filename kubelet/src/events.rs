//! Events about pods and the node (`kubectl describe` shows them). Posting never blocks the
//! caller; a repeat of the same event bumps its count instead of making a new one, as upstream's
//! recorder does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// An event posted before: (name, namespace, count).
type Seen = (String, String, i32);

#[derive(Clone)]
pub struct Recorder {
    client: Option<kube::Client>,
    host: String,
    /// Seen events: key -> (event name, namespace, count).
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    /// Every event, for tests.
    log: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Recorder {
    pub fn new(client: Option<kube::Client>, host: &str) -> Self {
        Recorder { client, host: host.to_string(), seen: Default::default(), log: Default::default() }
    }

    pub fn normal(&self, pod: &Pod, reason: &str, message: &str) {
        self.pod_event(pod, "Normal", reason, message);
    }

    pub fn warning(&self, pod: &Pod, reason: &str, message: &str) {
        self.pod_event(pod, "Warning", reason, message);
    }

    /// (type, reason, message) of every event so far.
    pub fn recorded(&self) -> Vec<(String, String, String)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pod_event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        };
        self.post(reference, type_, reason, message);
    }

    fn post(&self, reference: ObjectReference, type_: &str, reason: &str, message: &str) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push((type_.into(), reason.into(), message.into()));
        let Some(client) = self.client.clone() else { return };
        let ns = reference.namespace.clone().unwrap_or_else(|| "default".into());
        let key = format!(
            "{}/{}/{}/{type_}/{reason}/{message}",
            ns,
            reference.name.clone().unwrap_or_default(),
            reference.uid.clone().unwrap_or_default()
        );
        let now = jiff::Timestamp::now();
        let fresh_name = format!("{}.{:x}", reference.name.clone().unwrap_or_default(), now.as_nanosecond());
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > 4096 {
                seen.clear();
            }
            match seen.get_mut(&key) {
                Some((name, ns, count)) => {
                    *count += 1;
                    Some((name.clone(), ns.clone(), *count))
                }
                None => {
                    seen.insert(key, (fresh_name.clone(), ns.clone(), 1));
                    None
                }
            }
        };
        let host = self.host.clone();
        let (type_, reason, message) = (type_.to_string(), reason.to_string(), message.to_string());
        tokio::spawn(async move {
            let api: Api<Event> = Api::namespaced(client, &ns);
            let result = match repeat {
                Some((name, _, count)) => {
                    let patch = serde_json::json!({"count": count, "lastTimestamp": Time(now)});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
                }
                None => {
                    let event = Event {
                        metadata: ObjectMeta {
                            name: Some(fresh_name),
                            namespace: Some(ns.clone()),
                            ..Default::default()
                        },
                        involved_object: reference,
                        reason: Some(reason),
                        message: Some(message),
                        type_: Some(type_),
                        count: Some(1),
                        first_timestamp: Some(Time(now)),
                        last_timestamp: Some(Time(now)),
                        event_time: None::<MicroTime>,
                        source: Some(EventSource { component: Some("kubelet".into()), host: Some(host.clone()) }),
                        reporting_component: Some("kubelet".into()),
                        reporting_instance: Some(host),
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &event).await.map(|_| ())
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not post an event");
            }
        });
    }
}
