//! Two per-namespace publishers: the ServiceAccount controller keeps a `default`
//! ServiceAccount in every namespace that is not being deleted, and the root CA publisher keeps
//! the `kube-root-ca.crt` ConfigMap (key `ca.crt`: the cluster's CA bundle, which pods use to
//! trust the apiserver) in every namespace, putting it back when it is deleted or edited.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::informer::Informer;
use crate::workqueue::WorkQueue;

pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

fn created_or_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        // Exists already, or the namespace began terminating meanwhile.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

pub struct ServiceAccountController {
    client: kube::Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
    pub queue: Arc<WorkQueue>,
}

impl ServiceAccountController {
    pub fn new(
        client: kube::Client,
        namespaces: &Informer<Namespace>,
        accounts: &Informer<ServiceAccount>,
    ) -> Arc<ServiceAccountController> {
        let c = Arc::new(ServiceAccountController {
            client,
            namespaces: namespaces.clone(),
            accounts: accounts.clone(),
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<ServiceAccountController> = Arc::downgrade(&c);
        namespaces.on_change(move |_, new| {
            if let (Some(c), Some(ns)) = (w.upgrade(), new) {
                c.queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
        let w = Arc::downgrade(&c);
        accounts.on_change(move |old, new| {
            if let (Some(c), Some(sa), None) = (w.upgrade(), old, new)
                && sa.metadata.name.as_deref() == Some("default")
            {
                c.queue.add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        });
        c
    }

    pub async fn sync(&self, namespace: &str) -> Result<Option<Duration>, kube::Error> {
        let Some(ns) = self.namespaces.get("", namespace) else { return Ok(None) };
        if !active(&ns) || self.accounts.get(namespace, "default").is_some() {
            return Ok(None);
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        created_or_exists(Api::namespaced(self.client.clone(), namespace).create(&PostParams::default(), &sa).await)?;
        Ok(None)
    }
}

pub struct RootCaPublisher {
    client: kube::Client,
    namespaces: Informer<Namespace>,
    configmaps: Informer<ConfigMap>,
    ca: String,
    pub queue: Arc<WorkQueue>,
}

impl RootCaPublisher {
    pub fn new(
        client: kube::Client,
        namespaces: &Informer<Namespace>,
        configmaps: &Informer<ConfigMap>,
        ca: String,
    ) -> Arc<RootCaPublisher> {
        let c = Arc::new(RootCaPublisher {
            client,
            namespaces: namespaces.clone(),
            configmaps: configmaps.clone(),
            ca,
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<RootCaPublisher> = Arc::downgrade(&c);
        namespaces.on_change(move |_, new| {
            if let (Some(c), Some(ns)) = (w.upgrade(), new) {
                c.queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
        let w = Arc::downgrade(&c);
        configmaps.on_change(move |old, new| {
            if let (Some(c), Some(cm)) = (w.upgrade(), new.or(old))
                && cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP)
            {
                c.queue.add(cm.metadata.namespace.clone().unwrap_or_default());
            }
        });
        c
    }

    fn data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("ca.crt".to_string(), self.ca.clone())])
    }

    pub async fn sync(&self, namespace: &str) -> Result<Option<Duration>, kube::Error> {
        let Some(ns) = self.namespaces.get("", namespace) else { return Ok(None) };
        if !active(&ns) {
            return Ok(None);
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match self.configmaps.get(namespace, ROOT_CA_CONFIGMAP) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIGMAP.into()),
                        namespace: Some(namespace.into()),
                        ..Default::default()
                    },
                    data: Some(self.data()),
                    ..Default::default()
                };
                created_or_exists(api.create(&PostParams::default(), &cm).await)?;
            }
            Some(cm) if cm.data.as_ref() != Some(&self.data()) => {
                let mut fixed = (*cm).clone();
                fixed.data = Some(self.data());
                fixed.binary_data = None;
                match api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &fixed).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(Some(Duration::ZERO)),
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {}
        }
        Ok(None)
    }
}

/// The CA bundle pods should trust: `--root-ca-file`, else the kubeconfig's cluster CA.
pub fn root_ca(root_ca_file: Option<&std::path::Path>, kubeconfig: Option<&std::path::Path>) -> anyhow::Result<String> {
    use base64::Engine;
    if let Some(f) = root_ca_file {
        return std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("--root-ca-file {}: {e}", f.display()));
    }
    let Some(path) = kubeconfig else { anyhow::bail!("--root-ca-file or --kubeconfig is required") };
    let kc =
        kube::config::Kubeconfig::read_from(path).map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    let context = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .or(kc.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow::anyhow!("kubeconfig {}: no cluster", path.display()))?;
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| anyhow::anyhow!("kubeconfig {}: certificate-authority-data: {e}", path.display()))?;
        return String::from_utf8(pem)
            .map_err(|e| anyhow::anyhow!("kubeconfig {}: certificate-authority-data: {e}", path.display()));
    }
    if let Some(file) = &cluster.certificate_authority {
        return std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("certificate-authority {file}: {e}"));
    }
    anyhow::bail!("kubeconfig {}: the cluster has no CA; pass --root-ca-file", path.display())
}
