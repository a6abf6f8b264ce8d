//! The controllers that say which pods back each Service: `endpoint` (core/v1 Endpoints),
//! `endpointslice` (discovery.k8s.io/v1 EndpointSlices, what kube-proxy and DNS read) and
//! `endpointslicemirroring` (slices for Endpoints written by hand for Services without a
//! selector). What each should contain is pure (`desired`); here are the informers' handlers
//! and the writes, which touch only what differs.

pub mod desired;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};

use crate::informer::{Informer, key_of, split_key};
use crate::ownership::controller_reference;
use crate::workqueue::WorkQueue;
use desired::SliceContent;

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub const MIRRORING_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const HEADLESS: &str = "service.kubernetes.io/headless";

/// The informers the three controllers share.
#[derive(Clone, Default)]
pub struct Informers {
    pub services: Informer<Service>,
    pub pods: Informer<Pod>,
    pub endpoints: Informer<Endpoints>,
    pub slices: Informer<EndpointSlice>,
}

fn has_selector(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty())
}

fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The Service's labels, as upstream copies them onto its Endpoints and slices.
fn labels_for(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    if headless(svc) {
        l.insert(HEADLESS.into(), String::new());
    } else {
        l.remove(HEADLESS);
    }
    l
}

/// Queues a Service's key when it changes and when a pod it selects (before or after the
/// change) does: what both the Endpoints and the EndpointSlice controller follow.
fn follow_services_and_pods(informers: &Informers, queue: &Arc<WorkQueue>) {
    let q: Weak<WorkQueue> = Arc::downgrade(queue);
    informers.services.on_change(move |old, new| {
        if let (Some(q), Some(s)) = (q.upgrade(), new.or(old)) {
            q.add(key_of(s.as_ref()));
        }
    });
    let q = Arc::downgrade(queue);
    let services = informers.services.clone();
    informers.pods.on_change(move |old, new| {
        let (Some(q), Some(ns)) = (q.upgrade(), new.or(old).and_then(|p| p.metadata.namespace.clone())) else { return };
        for svc in services.list(&ns) {
            if [old, new].into_iter().flatten().any(|p| desired::selects(&svc, p)) {
                q.add(key_of(svc.as_ref()));
            }
        }
    });
}

pub struct EndpointsController {
    client: kube::Client,
    informers: Informers,
    pub queue: Arc<WorkQueue>,
}

impl EndpointsController {
    pub fn new(client: kube::Client, informers: &Informers) -> Arc<EndpointsController> {
        let c = Arc::new(EndpointsController {
            client,
            informers: informers.clone(),
            queue: Arc::new(WorkQueue::default()),
        });
        follow_services_and_pods(informers, &c.queue);
        let w: Weak<EndpointsController> = Arc::downgrade(&c);
        informers.endpoints.on_change(move |old, new| {
            if let (Some(c), Some(e), None) = (w.upgrade(), old, new) {
                c.queue.add(key_of(e.as_ref()));
            }
        });
        c
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (ns, name) = split_key(key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let Some(svc) = self.informers.services.get(ns, name) else {
            // The Service is gone: so are its Endpoints.
            if self.informers.endpoints.get(ns, name).is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(None);
        };
        if !has_selector(&svc) {
            return Ok(None);
        }
        let pods = self.informers.pods.list(ns);
        let refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let subsets = desired::subsets(&svc, &refs);
        let labels = labels_for(&svc);
        let subsets_opt = (!subsets.is_empty()).then_some(subsets);
        match self.informers.endpoints.get(ns, name) {
            Some(e) if e.subsets == subsets_opt && e.metadata.labels.clone().unwrap_or_default() == labels => Ok(None),
            Some(e) => {
                let mut updated = (*e).clone();
                updated.subsets = subsets_opt;
                updated.metadata.labels = Some(labels);
                match api.replace(name, &PostParams::default(), &updated).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(Some(Duration::ZERO)),
                    Err(e) => Err(e),
                }
            }
            None => {
                let e = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    subsets: subsets_opt,
                };
                match api.create(&PostParams::default(), &e).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::ZERO)),
                    Err(kube::Error::Api(e)) if e.code == 403 => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Brings the slices `managed_by` for one Service to `want`: slices with the same ports are
/// updated in place where their content differs, extra groups get new slices, leftovers go.
/// No endpoints at all keeps one empty placeholder slice, as upstream.
async fn reconcile_slices(
    client: &kube::Client,
    existing: Vec<Arc<EndpointSlice>>,
    mut want: Vec<SliceContent>,
    meta: ObjectMeta,
) -> Result<(), kube::Error> {
    let ns = meta.namespace.clone().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    if want.is_empty() {
        want.push(SliceContent { ports: vec![], endpoints: vec![] });
    }
    let mut unused: Vec<Arc<EndpointSlice>> = existing;
    unused.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut to_create = Vec::new();
    let mut updates = Vec::new();
    // Exact matches first: those slices need no write.
    want.retain(|w| {
        match unused.iter().position(|s| {
            s.ports.clone().unwrap_or_default() == w.ports
                && s.endpoints == w.endpoints
                && s.metadata.labels == meta.labels
        }) {
            Some(i) => {
                unused.remove(i);
                false
            }
            None => true,
        }
    });
    for w in want {
        match unused
            .iter()
            .position(|s| s.ports.clone().unwrap_or_default() == w.ports)
            .or((!unused.is_empty()).then_some(0))
        {
            Some(i) => updates.push((unused.remove(i), w)),
            None => to_create.push(w),
        }
    }
    let ports = |p: Vec<EndpointPort>| (!p.is_empty()).then_some(p);
    for (slice, w) in updates {
        let mut updated = (*slice).clone();
        updated.endpoints = w.endpoints;
        updated.ports = ports(w.ports);
        updated.metadata.labels = meta.labels.clone();
        match api.replace(slice.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &updated).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for w in to_create {
        let slice = EndpointSlice {
            metadata: meta.clone(),
            address_type: "IPv4".into(),
            endpoints: w.endpoints,
            ports: ports(w.ports),
        };
        match api.create(&PostParams::default(), &slice).await {
            Ok(_) => {}
            // The namespace is going away.
            Err(kube::Error::Api(e)) if e.code == 403 => {}
            Err(e) => return Err(e),
        }
    }
    for s in unused {
        match api.delete(s.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn slice_meta(
    ns: &str,
    service: &str,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
    managed_by: &str,
) -> ObjectMeta {
    let mut labels = labels;
    labels.insert(SERVICE_NAME.into(), service.into());
    labels.insert(MANAGED_BY.into(), managed_by.into());
    ObjectMeta {
        generate_name: Some(format!("{service}-")),
        namespace: Some(ns.into()),
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

fn managed_slices(
    slices: &Informer<EndpointSlice>,
    ns: &str,
    service: &str,
    managed_by: &str,
) -> Vec<Arc<EndpointSlice>> {
    slices
        .list(ns)
        .into_iter()
        .filter(|s| {
            let l = s.metadata.labels.as_ref();
            l.and_then(|l| l.get(SERVICE_NAME)).map(String::as_str) == Some(service)
                && l.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(managed_by)
        })
        .collect()
}

pub struct EndpointSliceController {
    client: kube::Client,
    informers: Informers,
    max_per_slice: usize,
    pub queue: Arc<WorkQueue>,
}

impl EndpointSliceController {
    pub fn new(client: kube::Client, informers: &Informers, max_per_slice: usize) -> Arc<EndpointSliceController> {
        let c = Arc::new(EndpointSliceController {
            client,
            informers: informers.clone(),
            max_per_slice,
            queue: Arc::new(WorkQueue::default()),
        });
        follow_services_and_pods(informers, &c.queue);
        // A slice of ours changed or deleted by someone else is put right.
        let w: Weak<EndpointSliceController> = Arc::downgrade(&c);
        informers.slices.on_change(move |old, new| {
            let (Some(c), Some(s)) = (w.upgrade(), new.or(old)) else { return };
            let l = s.metadata.labels.as_ref();
            if l.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(SLICE_CONTROLLER)
                && let Some(svc) = l.and_then(|l| l.get(SERVICE_NAME))
            {
                c.queue.add(format!("{}/{svc}", s.metadata.namespace.as_deref().unwrap_or_default()));
            }
        });
        c
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (ns, name) = split_key(key);
        // A deleted Service's slices go with it (they are owned by it).
        let Some(svc) = self.informers.services.get(ns, name) else { return Ok(None) };
        if !has_selector(&svc) {
            return Ok(None);
        }
        let pods = self.informers.pods.list(ns);
        let refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let want = desired::slices(&svc, &refs, self.max_per_slice);
        let existing = managed_slices(&self.informers.slices, ns, name, SLICE_CONTROLLER);
        let meta = slice_meta(ns, name, labels_for(&svc), controller_reference(svc.as_ref()), SLICE_CONTROLLER);
        reconcile_slices(&self.client, existing, want, meta).await?;
        Ok(None)
    }
}

/// Pure: the slices mirroring hand-written Endpoints (ready and not-ready addresses, per subset).
pub fn mirrored(e: &Endpoints, max: usize) -> Vec<SliceContent> {
    let mut out = Vec::new();
    for subset in e.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: Some(p.port),
                protocol: p.protocol.clone().or(Some("TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let endpoint = |a: &k8s_openapi::api::core::v1::EndpointAddress, ready: bool| Endpoint {
            addresses: vec![a.ip.clone()],
            conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(ready), terminating: Some(false) }),
            hostname: a.hostname.clone(),
            node_name: a.node_name.clone(),
            target_ref: a.target_ref.clone(),
            ..Default::default()
        };
        let endpoints: Vec<Endpoint> = subset
            .addresses
            .iter()
            .flatten()
            .map(|a| endpoint(a, true))
            .chain(subset.not_ready_addresses.iter().flatten().map(|a| endpoint(a, false)))
            .collect();
        for chunk in endpoints.chunks(max.max(1)) {
            out.push(SliceContent { ports: ports.clone(), endpoints: chunk.to_vec() });
        }
    }
    out
}

pub struct EndpointSliceMirroringController {
    client: kube::Client,
    informers: Informers,
    max_per_slice: usize,
    pub queue: Arc<WorkQueue>,
}

impl EndpointSliceMirroringController {
    pub fn new(
        client: kube::Client,
        informers: &Informers,
        max_per_slice: usize,
    ) -> Arc<EndpointSliceMirroringController> {
        let c = Arc::new(EndpointSliceMirroringController {
            client,
            informers: informers.clone(),
            max_per_slice,
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<EndpointSliceMirroringController> = Arc::downgrade(&c);
        informers.endpoints.on_change(move |old, new| {
            if let (Some(c), Some(e)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(e.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        informers.services.on_change(move |old, new| {
            if let (Some(c), Some(s)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(s.as_ref()));
            }
        });
        c
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (ns, name) = split_key(key);
        let existing = managed_slices(&self.informers.slices, ns, name, MIRRORING_CONTROLLER);
        let svc = self.informers.services.get(ns, name);
        let endpoints = self.informers.endpoints.get(ns, name);
        let mirror = match (&svc, &endpoints) {
            (Some(s), Some(e)) => {
                !has_selector(s)
                    && e.metadata.labels.as_ref().and_then(|l| l.get(SKIP_MIRROR)).map(String::as_str) != Some("true")
            }
            _ => false,
        };
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let (Some(e), true) = (endpoints, mirror) else {
            for s in existing {
                match api.delete(s.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(err)) if err.code == 404 => {}
                    Err(err) => return Err(err),
                }
            }
            return Ok(None);
        };
        let mut labels = e.metadata.labels.clone().unwrap_or_default();
        labels.remove(SKIP_MIRROR);
        let meta = slice_meta(ns, name, labels, controller_reference(e.as_ref()), MIRRORING_CONTROLLER);
        reconcile_slices(&self.client, existing, mirrored(&e, self.max_per_slice), meta).await?;
        Ok(None)
    }
}
