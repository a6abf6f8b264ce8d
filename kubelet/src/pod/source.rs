//! Where the kubelet reads the objects a pod refers to (ConfigMaps, Secrets, Services, tokens):
//! the apiserver, or maps in tests.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use kube::api::{Api, ListParams, PostParams};

#[async_trait::async_trait]
pub trait ObjectSource: Send + Sync {
    /// A ConfigMap (one read for both `data` and `binaryData`), `None` when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String>;
    async fn services(&self, ns: &str) -> Result<Vec<Service>, String>;
    /// A bound ServiceAccount token for `pod`: (token, expiry as RFC 3339).
    async fn token(&self, pod: &Pod, audience: Option<&str>, seconds: i64) -> Result<(String, String), String>;
    /// The PersistentVolume bound to claim `name`, or why there is none yet.
    async fn claimed_volume(&self, ns: &str, name: &str) -> Result<PersistentVolume, String>;
}

pub struct ApiSource {
    pub client: kube::Client,
}

fn err(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[async_trait::async_trait]
impl ObjectSource for ApiSource {
    async fn claimed_volume(&self, ns: &str, name: &str) -> Result<PersistentVolume, String> {
        let claim = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(err)?
            .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        let (Some(volume), true) = (volume, bound) else {
            return Err(format!("persistentvolumeclaim \"{name}\" is not bound yet"));
        };
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(&volume)
            .await
            .map_err(err)?
            .ok_or_else(|| format!("persistentvolume \"{volume}\" of claim \"{name}\" not found"))?;
        let claim_uid = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.clone());
        if claim_uid != claim.metadata.uid {
            return Err(format!("persistentvolume \"{volume}\" is bound to another claim"));
        }
        Ok(pv)
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns).get_opt(name).await.map_err(err)
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        match Api::<Secret>::namespaced(self.client.clone(), ns).get(name).await {
            Ok(s) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                Ok(Some(data))
            }
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    async fn services(&self, ns: &str) -> Result<Vec<Service>, String> {
        Api::<Service>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(err)
    }

    async fn token(&self, pod: &Pod, audience: Option<&str>, seconds: i64) -> Result<(String, String), String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), &ns);
        let resp: TokenRequest =
            api.create_subresource("token", &sa, &PostParams::default(), &req).await.map_err(err)?;
        let status = resp.status.ok_or("the TokenRequest came back without a token")?;
        Ok((status.token, status.expiration_timestamp.0.to_string()))
    }
}

/// Objects from maps, for unit tests.
#[derive(Default)]
pub struct MapSource {
    pub config_maps: HashMap<(String, String), BTreeMap<String, String>>,
    pub secrets: HashMap<(String, String), BTreeMap<String, Vec<u8>>>,
    pub services: Vec<Service>,
    /// Bound claims: (namespace, claim) -> volume.
    pub volumes: HashMap<(String, String), PersistentVolume>,
}

#[async_trait::async_trait]
impl ObjectSource for MapSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        Ok(self
            .config_maps
            .get(&(ns.to_string(), name.to_string()))
            .map(|data| ConfigMap { data: Some(data.clone()), ..Default::default() }))
    }
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(self.secrets.get(&(ns.to_string(), name.to_string())).cloned())
    }
    async fn services(&self, _ns: &str) -> Result<Vec<Service>, String> {
        Ok(self.services.clone())
    }
    async fn claimed_volume(&self, ns: &str, name: &str) -> Result<PersistentVolume, String> {
        self.volumes
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" is not bound yet"))
    }
    async fn token(&self, pod: &Pod, _audience: Option<&str>, _seconds: i64) -> Result<(String, String), String> {
        Ok((format!("token-for-{}", pod.metadata.name.clone().unwrap_or_default()), "2030-01-01T00:00:00Z".into()))
    }
}
