//! The PersistentVolume binder (`persistentvolume-binder`), as upstream's: a claim is bound to
//! the smallest Available volume of its class that offers its access modes, volume mode and
//! size (and matches its selector); a volume pre-bound to a claim by `claimRef` goes to that
//! claim only. With `--enable-hostpath-provisioner` (upstream's flag, for single-node and test
//! clusters) a claim of a class whose provisioner is `kubernetes.io/host-path` that finds no
//! volume gets one made for it: a hostPath directory under `--hostpath-provisioner-dir`
//! (default `/tmp/hostpath_pv`), which the kubelet creates on first use.
//!
//! A volume whose claim is deleted is `Released`; its reclaim policy then decides: `Retain`
//! keeps it, `Delete` deletes it (and, for a volume this provisioner made, its directory).
//! A claim that names no class gets the default class (the StorageClass annotated
//! `storageclass.kubernetes.io/is-default-class: "true"`), as upstream's admission gives it.
//!
//! Left out: Recycle, volume expansion, WaitForFirstConsumer (treated as Immediate), CSI and
//! other provisioners (their claims stay Pending with an event saying so).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::events::{Recorder, reference};
use crate::informer::{Informer, key_of, split_key};
use crate::selector;
use crate::workqueue::WorkQueue;

pub const HOST_PATH_PROVISIONER: &str = "kubernetes.io/host-path";
pub const DEFAULT_HOSTPATH_DIR: &str = "/tmp/hostpath_pv";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

fn storage(q: Option<&Quantity>) -> i128 {
    q.and_then(|q| quantity::parse_units(&q.0)).unwrap_or(0)
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The class a claim asks for: its own, else the default class's name, else none ("").
pub fn class_of(claim: &PersistentVolumeClaim, classes: &[Arc<StorageClass>]) -> String {
    if let Some(c) = claim.spec.as_ref().and_then(|s| s.storage_class_name.clone()) {
        return c;
    }
    classes
        .iter()
        .find(|c| {
            c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS)).map(String::as_str) == Some("true")
        })
        .and_then(|c| c.metadata.name.clone())
        .unwrap_or_default()
}

/// Whether `pv` can serve `claim` (of class `class`).
pub fn fits(pv: &PersistentVolume, claim: &PersistentVolumeClaim, class: &str) -> bool {
    let (Some(spec), Some(want)) = (pv.spec.as_ref(), claim.spec.as_ref()) else { return false };
    if pv.metadata.deletion_timestamp.is_some() || spec.storage_class_name.as_deref().unwrap_or("") != class {
        return false;
    }
    if let Some(r) = &spec.claim_ref {
        let same = r.name.as_deref() == claim.metadata.name.as_deref()
            && r.namespace.as_deref() == claim.metadata.namespace.as_deref()
            && r.uid.as_ref().is_none_or(|u| Some(u) == claim.metadata.uid.as_ref());
        if !same {
            return false;
        }
    } else if phase_of_volume(pv) != "Available" {
        return false;
    }
    let offered = spec.access_modes.as_deref().unwrap_or(&[]);
    if !want.access_modes.as_deref().unwrap_or(&[]).iter().all(|m| offered.contains(m)) {
        return false;
    }
    let mode = |m: Option<&String>| m.map(String::as_str).unwrap_or("Filesystem").to_string();
    if mode(spec.volume_mode.as_ref()) != mode(want.volume_mode.as_ref()) {
        return false;
    }
    let requested = storage(want.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")));
    if storage(spec.capacity.as_ref().and_then(|c| c.get("storage"))) < requested {
        return false;
    }
    match &want.selector {
        Some(sel) => selector::matches(sel, pv.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())),
        None => true,
    }
}

/// The volume `claim` should bind to: one pre-bound to it, else the smallest that fits.
pub fn best_volume(
    volumes: &[Arc<PersistentVolume>],
    claim: &PersistentVolumeClaim,
    class: &str,
) -> Option<Arc<PersistentVolume>> {
    let fitting = volumes.iter().filter(|v| fits(v, claim, class));
    let prebound = |v: &&Arc<PersistentVolume>| v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some();
    let (pre, free): (Vec<_>, Vec<_>) = fitting.partition(prebound);
    pre.into_iter()
        .next()
        .or_else(|| {
            free.into_iter().min_by_key(|v| storage(v.spec.as_ref().and_then(|s| s.capacity.as_ref()?.get("storage"))))
        })
        .cloned()
}

/// The hostPath volume the provisioner makes for `claim`.
pub fn provisioned_volume(claim: &PersistentVolumeClaim, class: &StorageClass, dir: &Path) -> PersistentVolume {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let want = claim.spec.clone().unwrap_or_default();
    let size = want.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage").cloned());
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{uid}")),
            annotations: Some(BTreeMap::from([(PROVISIONED_BY.to_string(), HOST_PATH_PROVISIONER.to_string())])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: want.access_modes.clone(),
            capacity: size.map(|s| BTreeMap::from([("storage".to_string(), s)])),
            claim_ref: Some(claim_reference(claim)),
            host_path: Some(HostPathVolumeSource {
                path: dir.join(format!("pvc-{uid}")).to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: want.volume_mode.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

fn claim_reference(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: claim.metadata.name.clone(),
        namespace: claim.metadata.namespace.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

pub struct VolumeBinder {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    /// Where provisioned hostPath volumes live; `None` when the provisioner is off.
    hostpath_dir: Option<PathBuf>,
    pub queue: Arc<WorkQueue>,
    events: Recorder,
}

/// Keys: `claim/<ns>/<name>` and `volume/<name>`.
fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!("claim/{}", key_of(c))
}

impl VolumeBinder {
    pub fn new(
        client: kube::Client,
        claims: &Informer<PersistentVolumeClaim>,
        volumes: &Informer<PersistentVolume>,
        classes: &Informer<StorageClass>,
        hostpath_dir: Option<PathBuf>,
        events: Recorder,
    ) -> Arc<VolumeBinder> {
        let c = Arc::new(VolumeBinder {
            client,
            claims: claims.clone(),
            volumes: volumes.clone(),
            classes: classes.clone(),
            hostpath_dir,
            queue: Arc::new(WorkQueue::default()),
            events,
        });
        let w: Weak<VolumeBinder> = Arc::downgrade(&c);
        claims.on_change(move |old, new| {
            let (Some(c), Some(claim)) = (w.upgrade(), new.or(old)) else { return };
            c.queue.add(claim_key(claim));
            // A deleted claim releases its volume.
            if new.is_none()
                && let Some(v) = claim.spec.as_ref().and_then(|s| s.volume_name.clone())
            {
                c.queue.add(format!("volume/{v}"));
            }
        });
        let w = Arc::downgrade(&c);
        volumes.on_change(move |old, new| {
            let (Some(c), Some(pv)) = (w.upgrade(), new.or(old)) else { return };
            c.queue.add(format!("volume/{}", pv.metadata.name.as_deref().unwrap_or_default()));
            // A volume that became available may serve a waiting claim.
            for claim in c.claims.list_all() {
                if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("").is_empty() {
                    c.queue.add(claim_key(&claim));
                }
            }
        });
        let w = Arc::downgrade(&c);
        classes.on_change(move |_, _| {
            let Some(c) = w.upgrade() else { return };
            for claim in c.claims.list_all() {
                c.queue.add(claim_key(&claim));
            }
        });
        c
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        tokio::join!(self.claims.synced(), self.volumes.synced(), self.classes.synced());
        match key.split_once('/') {
            Some(("claim", rest)) => {
                let (ns, name) = split_key(rest);
                match self.claims.get(ns, name) {
                    Some(claim) => self.sync_claim(&claim).await,
                    None => Ok(None),
                }
            }
            Some(("volume", name)) => match self.volumes.get("", name) {
                Some(pv) => self.sync_volume(&pv).await,
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    async fn sync_claim(&self, claim: &PersistentVolumeClaim) -> Result<Option<Duration>, kube::Error> {
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let bound_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        let pv = match &bound_name {
            Some(v) => match self.volumes.get("", v) {
                Some(pv) => pv,
                None => {
                    self.set_claim_phase(claim, "Lost").await?;
                    return Ok(None);
                }
            },
            None => {
                let classes = self.classes.list_all();
                let class = class_of(claim, &classes);
                match best_volume(&self.volumes.list_all(), claim, &class) {
                    Some(pv) => pv,
                    None => return self.provision(claim, &class, &classes).await,
                }
            }
        };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        // The volume first (its claimRef), then the claim: a crash between the two leaves a
        // volume pre-bound to this claim, which the next sync finishes binding.
        let claimed = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.as_ref());
        if claimed != claim.metadata.uid.as_ref() {
            if claimed.is_some() {
                // The volume is someone else's: this claim lost it.
                self.set_claim_phase(claim, "Lost").await?;
                return Ok(None);
            }
            let patch = json!({
                "metadata": {"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"},
                    "resourceVersion": pv.metadata.resource_version},
                "spec": {"claimRef": claim_reference(claim)},
            });
            match volumes.patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                // Someone else wrote the volume meanwhile: look again.
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Some(Duration::from_millis(100))),
                Err(e) => return Err(e),
            }
        }
        if phase_of_volume(&pv) != "Bound" {
            let patch = json!({"status": {"phase": "Bound"}});
            volumes.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        if bound_name.is_none() {
            let patch = json!({"metadata": {"annotations": {
                "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
                "spec": {"volumeName": pv_name}});
            claims
                .patch(
                    claim.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let status = claim.status.clone().unwrap_or_default();
        if status.phase.as_deref() != Some("Bound") || status.capacity != spec.capacity {
            let patch =
                json!({"status": {"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity}});
            claims
                .patch_status(
                    claim.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(None)
    }

    async fn set_claim_phase(&self, claim: &PersistentVolumeClaim, phase: &str) -> Result<(), kube::Error> {
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"status": {"phase": phase}});
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        claims.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }

    /// No volume fits: make one if the class's provisioner is ours and enabled.
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &str,
        classes: &[Arc<StorageClass>],
    ) -> Result<Option<Duration>, kube::Error> {
        let sc = classes.iter().find(|c| c.metadata.name.as_deref() == Some(class));
        let Some(sc) = sc else {
            let message = if class.is_empty() {
                "no persistent volumes available for this claim and no storage class is set".to_string()
            } else {
                format!("storageclass.storage.k8s.io \"{class}\" not found")
            };
            self.events.normal(reference(claim), "FailedBinding", message);
            return Ok(None);
        };
        match (&self.hostpath_dir, sc.provisioner.as_str()) {
            (Some(dir), HOST_PATH_PROVISIONER) => {
                let pv = provisioned_volume(claim, sc, dir);
                let name = pv.metadata.name.clone().unwrap_or_default();
                match Api::<PersistentVolume>::all(self.client.clone()).create(&PostParams::default(), &pv).await {
                    Ok(_) => self.events.normal(
                        reference(claim),
                        "ProvisioningSucceeded",
                        format!("Successfully provisioned volume {name} using {HOST_PATH_PROVISIONER}"),
                    ),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        self.events.warning(reference(claim), "ProvisioningFailed", e.to_string());
                        return Err(e);
                    }
                }
                Ok(None)
            }
            (_, provisioner) => {
                self.events.normal(
                    reference(claim),
                    "ExternalProvisioning",
                    format!(
                        "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator"
                    ),
                );
                Ok(None)
            }
        }
    }

    async fn sync_volume(&self, pv: &PersistentVolume) -> Result<Option<Duration>, kube::Error> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        if pv.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let phase = match &claim_ref {
            None => "Available",
            // Pre-bound by a user to a claim not yet bound: available to that claim only.
            Some(r) if r.uid.is_none() => "Available",
            Some(r) => {
                let ns = r.namespace.as_deref().unwrap_or_default();
                let claim = self.claims.get(ns, r.name.as_deref().unwrap_or_default());
                let live = match claim {
                    Some(c) => c.metadata.uid == r.uid,
                    // The cache may lag: ask before releasing.
                    None => Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
                        .get_opt(r.name.as_deref().unwrap_or_default())
                        .await?
                        .is_some_and(|c| c.metadata.uid == r.uid),
                };
                if live { "Bound" } else { "Released" }
            }
        };
        if phase == "Released" {
            let policy =
                pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
            if policy == "Delete" {
                return self.reclaim(pv).await;
            }
        }
        if phase_of_volume(pv) != phase {
            let patch = json!({"status": {"phase": phase}});
            match volumes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Deletes a released volume whose policy is Delete; a volume this provisioner made loses
    /// its directory too (only ever under the provisioner's own directory).
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<Option<Duration>, kube::Error> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let ours = pv.metadata.annotations.as_ref().and_then(|a| a.get(PROVISIONED_BY)).map(String::as_str)
            == Some(HOST_PATH_PROVISIONER);
        if ours && let (Some(dir), Some(h)) = (&self.hostpath_dir, pv.spec.as_ref().and_then(|s| s.host_path.as_ref()))
        {
            let path = PathBuf::from(&h.path);
            if path.parent() == Some(dir.as_path())
                && path.exists()
                && let Err(e) = std::fs::remove_dir_all(&path)
            {
                tracing::warn!(volume = name, path = %path.display(), error = %e, "Could not remove the volume's directory");
            }
        } else if !ours {
            let provisioner = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .cloned()
                .unwrap_or_else(|| "none".into());
            if provisioner != "none" {
                // Another provisioner's volume: its deleter frees the storage.
                return Ok(None);
            }
        }
        match Api::<PersistentVolume>::all(self.client.clone()).delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, modes: &[&str], class: &str, phase: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"size": size}},
                "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class,
                    "hostPath": {"path": "/tmp/x"}},
                "status": {"phase": phase}}))
            .expect("pv"),
        )
    }

    fn claim(size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
        let mut c = json!({"metadata": {"name": "data", "namespace": "default", "uid": "c1"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}});
        if let Some(class) = class {
            c["spec"]["storageClassName"] = json!(class);
        }
        serde_json::from_value(c).expect("claim")
    }

    #[test]
    fn the_smallest_available_volume_of_the_class_with_the_modes_and_size_wins() {
        let volumes = vec![
            pv("big", "10Gi", &["ReadWriteOnce"], "manual", "Available"),
            pv("small", "2Gi", &["ReadWriteOnce", "ReadOnlyMany"], "manual", "Available"),
            pv("tiny", "500Mi", &["ReadWriteOnce"], "manual", "Available"),
            pv("other-class", "1Gi", &["ReadWriteOnce"], "fast", "Available"),
            pv("taken", "1Gi", &["ReadWriteOnce"], "manual", "Bound"),
            pv("rox-only", "1Gi", &["ReadOnlyMany"], "manual", "Available"),
        ];
        let c = claim("1Gi", &["ReadWriteOnce"], Some("manual"));
        assert_eq!(best_volume(&volumes, &c, "manual").and_then(|v| v.metadata.name.clone()).as_deref(), Some("small"));
        let huge = claim("20Gi", &["ReadWriteOnce"], Some("manual"));
        assert!(best_volume(&volumes, &huge, "manual").is_none());
    }

    #[test]
    fn a_volume_pre_bound_to_a_claim_serves_only_that_claim_and_comes_first() {
        let mut pre = (*pv("pre", "5Gi", &["ReadWriteOnce"], "", "Available")).clone();
        pre.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
            name: Some("data".into()),
            namespace: Some("default".into()),
            ..Default::default()
        });
        let volumes = vec![pv("free", "1Gi", &["ReadWriteOnce"], "", "Available"), Arc::new(pre.clone())];
        let c = claim("1Gi", &["ReadWriteOnce"], None);
        assert_eq!(best_volume(&volumes, &c, "").and_then(|v| v.metadata.name.clone()).as_deref(), Some("pre"));
        let mut other = claim("1Gi", &["ReadWriteOnce"], None);
        other.metadata.name = Some("other".into());
        assert!(!fits(&pre, &other, ""));
    }

    #[test]
    fn a_claim_without_a_class_gets_the_default_class() {
        let default: StorageClass = serde_json::from_value(json!({"metadata": {"name": "standard",
            "annotations": {DEFAULT_CLASS: "true"}}, "provisioner": HOST_PATH_PROVISIONER}))
        .expect("class");
        let plain: StorageClass =
            serde_json::from_value(json!({"metadata": {"name": "slow"}, "provisioner": "x"})).expect("class");
        let c = claim("1Gi", &["ReadWriteOnce"], None);
        assert_eq!(class_of(&c, &[Arc::new(plain.clone()), Arc::new(default)]), "standard");
        assert_eq!(class_of(&c, &[Arc::new(plain)]), "");
        assert_eq!(class_of(&claim("1Gi", &[], Some("")), &[]), "", "an explicit empty class stays empty");
    }

    #[test]
    fn a_provisioned_volume_is_a_hostpath_directory_pre_bound_to_its_claim() {
        let class: StorageClass = serde_json::from_value(json!({"metadata": {"name": "standard"},
            "provisioner": HOST_PATH_PROVISIONER, "reclaimPolicy": "Delete"}))
        .expect("class");
        let c = claim("3Gi", &["ReadWriteOnce"], Some("standard"));
        let v = provisioned_volume(&c, &class, Path::new("/tmp/hostpath_pv"));
        let spec = v.spec.clone().expect("spec");
        assert_eq!(v.metadata.name.as_deref(), Some("pvc-c1"));
        assert_eq!(spec.host_path.map(|h| h.path).as_deref(), Some("/tmp/hostpath_pv/pvc-c1"));
        assert_eq!(spec.claim_ref.and_then(|r| r.uid).as_deref(), Some("c1"));
        assert_eq!(spec.capacity.expect("capacity")["storage"].0, "3Gi");
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert!(fits(&v, &c, "standard"), "the claim binds to what was made for it");
    }
}
