//! The pods a Job creates: its template, owned by the Job (controller reference), carrying the
//! Job's labels and the `batch.kubernetes.io/job-tracking` finalizer that keeps a finished pod
//! around until the Job has counted it. Indexed Jobs' pods also carry their completion index
//! (annotation and label), the `JOB_COMPLETION_INDEX` variable in every container read from
//! that annotation, the hostname `<job>-<index>` and the name prefix `<job>-<index>-`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::indexes::COMPLETION_INDEX;
use crate::ownership::controller_reference;

/// The finalizer that holds a pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Failures of the pod's index so far (backoffLimitPerIndex).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Longest generateName prefix the apiserver accepts before its random suffix.
const MAX_GENERATED_PREFIX: usize = 58;

/// `<job>-`, or `<job>-<index>-` for an Indexed Job, the Job's name cut so the prefix fits.
pub fn generate_name(job: &str, index: Option<i32>) -> String {
    let tail = match index {
        Some(i) => format!("-{i}-"),
        None => "-".to_string(),
    };
    let room = MAX_GENERATED_PREFIX.saturating_sub(tail.len());
    let mut cut = job.len().min(room);
    while !job.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &job[..cut])
}

fn add_index_env(c: &mut Container) {
    let env = c.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == INDEX_ENV) {
        return;
    }
    env.push(EnvVar {
        name: INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..Default::default()
        }),
    });
}

/// A pod for `job`; `index` for Indexed Jobs, `index_failures` when backoffLimitPerIndex
/// counts failures per index.
pub fn pod_from_template(job: &Job, index: Option<i32>, index_failures: Option<i32>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let template = spec.template;
    let meta = template.metadata.unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    if spec.manual_selector != Some(true) {
        // The apiserver puts these in the template; a Job created otherwise still gets them.
        let uid = job.metadata.uid.clone().unwrap_or_default();
        for (k, v) in
            [(CONTROLLER_UID_LABEL, &uid), ("controller-uid", &uid), (JOB_NAME_LABEL, &name), ("job-name", &name)]
        {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
    }
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let mut pod_spec = template.spec.unwrap_or_default();
    if let Some(i) = index {
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(n) = index_failures {
            annotations.insert(INDEX_FAILURE_COUNT.into(), n.to_string());
        }
        pod_spec.hostname = Some(format!("{name}-{i}"));
        pod_spec.containers.iter_mut().for_each(add_index_env);
        pod_spec.init_containers.iter_mut().flatten().for_each(add_index_env);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(&name, index)),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_reference(job)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(mode: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pi", "namespace": "ns", "uid": "job-uid"},
            "spec": {"completionMode": mode, "completions": 3,
                "template": {"metadata": {"labels": {"app": "pi"}},
                    "spec": {"restartPolicy": "Never",
                        "initContainers": [{"name": "setup", "image": "busybox"}],
                        "containers": [{"name": "c", "image": "busybox",
                            "env": [{"name": "A", "value": "1"}]}]}}}
        }))
        .expect("job")
    }

    #[test]
    fn pods_are_owned_labelled_and_held_by_the_tracking_finalizer() {
        let p = pod_from_template(&job("NonIndexed"), None, None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        let labels = p.metadata.labels.expect("labels");
        assert_eq!(labels[CONTROLLER_UID_LABEL], "job-uid");
        assert_eq!(labels["controller-uid"], "job-uid");
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["app"], "pi");
        assert_eq!(p.metadata.finalizers.as_deref(), Some(&[TRACKING_FINALIZER.to_string()][..]));
        let owner = &p.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Job", "job-uid", Some(true)));
        assert!(p.metadata.annotations.is_none());
        assert!(p.spec.expect("spec").hostname.is_none());
    }

    #[test]
    fn indexed_pods_carry_their_index_everywhere_upstream_puts_it() {
        let p = pod_from_template(&job("Indexed"), Some(2), Some(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(p.metadata.annotations.as_ref().expect("annotations")[COMPLETION_INDEX], "2");
        assert_eq!(p.metadata.annotations.as_ref().expect("annotations")[INDEX_FAILURE_COUNT], "1");
        assert_eq!(p.metadata.labels.as_ref().expect("labels")[COMPLETION_INDEX], "2");
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            let env = c.env.as_ref().expect("env");
            let var = env.iter().find(|e| e.name == INDEX_ENV).expect("JOB_COMPLETION_INDEX");
            let path = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
            assert_eq!(path, Some("metadata.annotations['batch.kubernetes.io/job-completion-index']"));
        }
        assert_eq!(spec.containers[0].env.as_ref().expect("env")[0].name, "A", "the template's variables stay first");
    }

    #[test]
    fn long_job_names_are_cut_to_fit_the_generated_name() {
        let long = "a".repeat(70);
        assert_eq!(generate_name(&long, None).len(), 58);
        let indexed = generate_name(&long, Some(12));
        assert!(indexed.ends_with("-12-") && indexed.len() == 58, "{indexed}");
        assert_eq!(generate_name("pi", Some(0)), "pi-0-");
    }
}
