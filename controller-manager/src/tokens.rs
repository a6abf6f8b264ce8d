//! The ServiceAccount token controller (`serviceaccount-token`): fills and cleans up the Secrets
//! of type `kubernetes.io/service-account-token` that users create for a ServiceAccount (named by
//! the `kubernetes.io/service-account.name` annotation, optionally pinned by `.uid`).
//!
//! - A token Secret whose ServiceAccount exists (with the uid named, if one is) gets `data.token`
//!   (a legacy token: a JWT signed ES256 with the service account key, the apiserver's `sa.key`),
//!   `data.ca.crt` (the root CA bundle), `data.namespace`, and both annotations.
//! - A token Secret whose ServiceAccount does not exist, or has another uid, is deleted; so
//!   deleting a ServiceAccount deletes its token Secrets.
//!
//! Level-triggered on one queue of Secret keys: a ServiceAccount change queues the token Secrets
//! that name it, and [`TokensController::sync`] decides from the Secret and the account alone
//! ([`plan`]). A ServiceAccount missing from the cache is looked up live before its Secrets are
//! deleted, so a Secret created right after its account is never deleted for a stale cache.
//!
//! Architecture Invariant: the apiserver accepts these tokens only while the Secret holds exactly
//! the token and the account keeps the uid in it, so deleting either revokes the token. Claims
//! and signature must stay what `apiserver/src/satoken.rs` verifies (issuer
//! [`LEGACY_ISSUER`], ES256, the four `kubernetes.io/serviceaccount/...` claims).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::json;

use crate::informer::{Informer, key_of, split_key};
use crate::workqueue::WorkQueue;

pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// `iss` of legacy tokens, as upstream.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
pub const TOKEN_KEY: &str = "token";
pub const CA_KEY: &str = "ca.crt";
pub const NAMESPACE_KEY: &str = "namespace";

/// The DER SubjectPublicKeyInfo of a P-256 key, up to its 65-byte uncompressed point: the key id
/// is computed over the whole, as the apiserver and upstream compute it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--service-account-private-key-file {path}: {why}")]
    Read { path: String, why: String },
}

/// Signs legacy tokens with the service account key.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSigner(kid={})", self.kid)
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` (PKCS#8) PEM block.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let Some(start) = pem.find(BEGIN) else {
        return Err(if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            "an EC key in SEC1 form; convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)".into()
        } else {
            "no PKCS#8 private key (-----BEGIN PRIVATE KEY-----) in the file".into()
        });
    };
    let body = &pem[start + BEGIN.len()..];
    let body = body.find(END).map(|end| &body[..end]).ok_or("the PEM block does not end")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(b64).map_err(|e| format!("the PEM block is not base64: {e}"))
}

impl TokenSigner {
    /// The key in `path`: PKCS#8 PEM, ECDSA P-256 (what the apiserver generates as `sa.key`).
    pub fn load(path: &Path) -> Result<TokenSigner, KeyError> {
        let err = |why: String| KeyError::Read { path: path.display().to_string(), why };
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        TokenSigner::from_pem(&pem).map_err(err)
    }

    pub fn from_pem(pem: &str) -> Result<TokenSigner, String> {
        let der = pkcs8_der(pem)?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|_| "the service account key must be an ECDSA P-256 key".to_string())?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(TokenSigner { key, kid, rng })
    }

    /// A legacy token for the account `account` (uid `uid`) held in Secret `secret` of `namespace`.
    pub fn legacy_token(&self, namespace: &str, secret: &str, account: &str, uid: &str) -> Result<String, SignError> {
        let claims = json!({
            "iss": LEGACY_ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": account,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
        });
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| SignError)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing a service account token failed")]
pub struct SignError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("looking up the service account: {0}")]
    GetServiceAccount(#[source] kube::Error),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("updating the token secret: {0}")]
    Update(#[source] kube::Error),
    #[error("deleting the token secret: {0}")]
    Delete(#[source] kube::Error),
}

fn is_token_secret(s: &Secret) -> bool {
    s.type_.as_deref() == Some(SECRET_TYPE)
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata.annotations.as_ref()?.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// Whether `account` is the one `secret` is for: the name matches, and the uid too if pinned.
fn is_for(secret: &Secret, account: &ServiceAccount) -> bool {
    annotation(secret, NAME_ANNOTATION) == account.metadata.name.as_deref()
        && annotation(secret, UID_ANNOTATION).is_none_or(|uid| account.metadata.uid.as_deref() == Some(uid))
}

/// Whether this controller looks after `secret`: a token Secret naming its account, not being
/// deleted. (Upstream's apiserver refuses a token Secret without the name annotation; here such a
/// Secret is left alone rather than deleted.)
fn is_managed(secret: &Secret) -> bool {
    is_token_secret(secret)
        && secret.metadata.deletion_timestamp.is_none()
        && annotation(secret, NAME_ANNOTATION).is_some()
}

/// What a token Secret needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// Its ServiceAccount is gone (or is another one now).
    Delete,
    /// Some of its data is missing or stale.
    Fill {
        ca: bool,
        namespace: bool,
        token: bool,
    },
}

/// Pure: what `secret` needs, given the ServiceAccount it names as found (`None`: none with that
/// name and uid) and the root CA bundle.
pub fn plan(secret: &Secret, account: Option<&ServiceAccount>, root_ca: &str) -> Plan {
    if !is_managed(secret) {
        return Plan::Nothing;
    }
    if !account.is_some_and(|a| is_for(secret, a)) {
        return Plan::Delete;
    }
    let data = |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.as_slice()).unwrap_or_default();
    let ca = !root_ca.is_empty() && data(CA_KEY) != root_ca.as_bytes();
    let namespace = data(NAMESPACE_KEY).is_empty();
    let token = data(TOKEN_KEY).is_empty();
    if ca || namespace || token { Plan::Fill { ca, namespace, token } } else { Plan::Nothing }
}

/// `secret` with what `plan` found missing put in (`token`: the freshly signed one, if needed),
/// annotated with the account's name and uid.
pub fn filled(secret: &Secret, account: &ServiceAccount, root_ca: &str, token: Option<String>) -> Secret {
    let mut s = secret.clone();
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    let data = s.data.get_or_insert_with(BTreeMap::new);
    if !root_ca.is_empty() {
        data.insert(CA_KEY.into(), ByteString(root_ca.as_bytes().to_vec()));
    }
    if data.get(NAMESPACE_KEY).is_none_or(|b| b.0.is_empty()) {
        data.insert(NAMESPACE_KEY.into(), ByteString(ns.into_bytes()));
    }
    if let Some(t) = token {
        data.insert(TOKEN_KEY.into(), ByteString(t.into_bytes()));
    }
    let annotations = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(NAME_ANNOTATION.into(), account.metadata.name.clone().unwrap_or_default());
    annotations.insert(UID_ANNOTATION.into(), account.metadata.uid.clone().unwrap_or_default());
    s
}

/// The merge patch that writes `filled`'s data and annotations, only onto the version it was made
/// from (a Secret changed meanwhile answers 409 Conflict).
fn fill_patch(filled: &Secret) -> serde_json::Value {
    json!({
        "metadata": {"resourceVersion": filled.metadata.resource_version, "annotations": filled.metadata.annotations},
        "data": filled.data,
    })
}

pub struct TokensController {
    client: kube::Client,
    accounts: Informer<ServiceAccount>,
    secrets: Informer<Secret>,
    signer: TokenSigner,
    root_ca: String,
    pub queue: Arc<WorkQueue>,
}

impl TokensController {
    pub fn new(
        client: kube::Client,
        accounts: &Informer<ServiceAccount>,
        secrets: &Informer<Secret>,
        signer: TokenSigner,
        root_ca: String,
    ) -> Arc<TokensController> {
        let c = Arc::new(TokensController {
            client,
            accounts: accounts.clone(),
            secrets: secrets.clone(),
            signer,
            root_ca,
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<TokensController> = Arc::downgrade(&c);
        secrets.on_change(move |old, new| {
            if let (Some(c), Some(s)) = (w.upgrade(), new.or(old))
                && is_token_secret(s)
            {
                c.queue.add(key_of(s.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        accounts.on_change(move |old, new| {
            let (Some(c), Some(sa)) = (w.upgrade(), new.or(old)) else { return };
            let ns = sa.metadata.namespace.as_deref().unwrap_or_default();
            for s in c.secrets.list(ns) {
                if is_token_secret(&s) && annotation(&s, NAME_ANNOTATION) == sa.metadata.name.as_deref() {
                    c.queue.add(key_of(s.as_ref()));
                }
            }
        });
        c
    }

    /// The ServiceAccount `secret` names, from the cache, else read live: a cache that has not
    /// seen a new account yet must not get its Secrets deleted.
    async fn service_account_for(&self, secret: &Secret) -> Result<Option<Arc<ServiceAccount>>, SyncError> {
        let ns = secret.metadata.namespace.as_deref().unwrap_or_default();
        let name = annotation(secret, NAME_ANNOTATION).unwrap_or_default();
        if let Some(sa) = self.accounts.get(ns, name).filter(|sa| is_for(secret, sa)) {
            return Ok(Some(sa));
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let live = api.get_opt(name).await.map_err(SyncError::GetServiceAccount)?;
        Ok(live.filter(|sa| is_for(secret, sa)).map(Arc::new))
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (ns, name) = split_key(key);
        let Some(secret) = self.secrets.get(ns, name) else { return Ok(None) };
        if !is_managed(&secret) {
            return Ok(None);
        }
        let account = self.service_account_for(&secret).await?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match (plan(&secret, account.as_deref(), &self.root_ca), account) {
            (Plan::Nothing, _) => Ok(None),
            (Plan::Fill { token, .. }, Some(sa)) => {
                let token = match token {
                    true => Some(self.signer.legacy_token(
                        ns,
                        name,
                        sa.metadata.name.as_deref().unwrap_or_default(),
                        sa.metadata.uid.as_deref().unwrap_or_default(),
                    )?),
                    false => None,
                };
                let patch = fill_patch(&filled(&secret, &sa, &self.root_ca, token));
                match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        tracing::info!(secret = %key, "Filled ServiceAccount token Secret");
                        Ok(None)
                    }
                    // Changed meanwhile: decide again on the newer version.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::ZERO)),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                    Err(e) => Err(SyncError::Update(e)),
                }
            }
            (Plan::Delete, _) | (Plan::Fill { .. }, None) => {
                // Only this Secret, not one of the same name made since.
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: secret.metadata.uid.clone(), resource_version: None }),
                    ..Default::default()
                };
                match api.delete(name, &dp).await {
                    Ok(_) => {
                        tracing::info!(secret = %key, "Deleted ServiceAccount token Secret: its ServiceAccount is gone");
                        Ok(None)
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                    Err(e) => Err(SyncError::Delete(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256).
    const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdpMefU2skRylNTow
aXtV0Wy97LM5hcpoyA/zuRZfMP2hRANCAATSq0A3/NSQc0sWEOdTgzJOEqJLsqlL
HTdr3kIlprpYQ4hKoDe99oyeQWm9VpQHjrc6P4Fb4A899luRjZPKiTYw
-----END PRIVATE KEY-----
";

    fn account(name: &str, uid: &str) -> ServiceAccount {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns", "uid": uid}})).expect("sa")
    }

    fn secret(annotations: serde_json::Value, data: serde_json::Value) -> Secret {
        serde_json::from_value(json!({
            "metadata": {
                "name": "robot-token", "namespace": "ns", "uid": "s-1", "resourceVersion": "7",
                "annotations": annotations,
            },
            "type": SECRET_TYPE,
            "data": data,
        }))
        .expect("secret")
    }

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn a_new_token_secret_is_filled_and_a_complete_one_left_alone() {
        let sa = account("robot", "u-1");
        let fresh = secret(json!({NAME_ANNOTATION: "robot"}), json!({}));
        let want = Plan::Fill { ca: true, namespace: true, token: true };
        assert_eq!(plan(&fresh, Some(&sa), "CA"), want);
        let done = filled(&fresh, &sa, "CA", Some("jwt".into()));
        let data = done.data.as_ref().expect("data");
        assert_eq!(data[TOKEN_KEY].0, b"jwt");
        assert_eq!(data[CA_KEY].0, b"CA");
        assert_eq!(data[NAMESPACE_KEY].0, b"ns");
        assert_eq!(done.metadata.annotations.as_ref().expect("annotations")[UID_ANNOTATION], "u-1");
        assert_eq!(plan(&done, Some(&sa), "CA"), Plan::Nothing);
        // Written as a merge patch of the version read.
        let patch = fill_patch(&done);
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(patch["data"][TOKEN_KEY], b64("jwt"));
        assert_eq!(patch["metadata"]["annotations"][NAME_ANNOTATION], "robot");
        // A new CA bundle is written over the old one; the token stays.
        assert_eq!(plan(&done, Some(&sa), "CA2"), Plan::Fill { ca: true, namespace: false, token: false });
        // Without a CA bundle, none is asked for.
        let no_ca = secret(json!({NAME_ANNOTATION: "robot"}), json!({TOKEN_KEY: b64("t"), NAMESPACE_KEY: b64("ns")}));
        assert_eq!(plan(&no_ca, Some(&sa), ""), Plan::Nothing);
    }

    #[test]
    fn a_token_secret_without_its_service_account_or_for_another_uid_is_deleted() {
        let pinned = secret(json!({NAME_ANNOTATION: "robot", UID_ANNOTATION: "u-1"}), json!({}));
        assert_eq!(plan(&pinned, None, "CA"), Plan::Delete);
        assert_eq!(plan(&pinned, Some(&account("robot", "u-2")), "CA"), Plan::Delete, "recreated account");
        assert_eq!(plan(&pinned, Some(&account("other", "u-1")), "CA"), Plan::Delete);
        assert!(matches!(plan(&pinned, Some(&account("robot", "u-1")), "CA"), Plan::Fill { .. }));
    }

    #[test]
    fn other_secrets_unnamed_ones_and_those_being_deleted_are_left_alone() {
        let mut opaque = secret(json!({NAME_ANNOTATION: "robot"}), json!({}));
        opaque.type_ = Some("Opaque".into());
        assert_eq!(plan(&opaque, None, "CA"), Plan::Nothing);
        assert_eq!(plan(&secret(json!({}), json!({})), None, "CA"), Plan::Nothing);
        let mut going = secret(json!({NAME_ANNOTATION: "robot"}), json!({}));
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(plan(&going, None, "CA"), Plan::Nothing);
    }

    #[test]
    fn legacy_tokens_carry_upstreams_claims_and_an_es256_signature() {
        let signer = TokenSigner::from_pem(KEY_PEM).expect("key");
        let token = signer.legacy_token("ns", "robot-token", "robot", "u-1").expect("signed");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode =
            |p: &str| -> serde_json::Value { serde_json::from_slice(&B64.decode(p).expect("b64")).expect("json") };
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], signer.kid);
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], LEGACY_ISSUER);
        assert_eq!(claims["sub"], "system:serviceaccount:ns:robot");
        assert_eq!(claims["kubernetes.io/serviceaccount/namespace"], "ns");
        assert_eq!(claims["kubernetes.io/serviceaccount/secret.name"], "robot-token");
        assert_eq!(claims["kubernetes.io/serviceaccount/service-account.name"], "robot");
        assert_eq!(claims["kubernetes.io/serviceaccount/service-account.uid"], "u-1");
        assert!(claims.get("exp").is_none(), "legacy tokens do not expire");
        let public =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, signer.key.public_key().as_ref());
        let sig = B64.decode(parts[2]).expect("b64");
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).expect("verifies");
    }

    #[test]
    fn keys_that_cannot_sign_are_refused_in_words() {
        assert!(TokenSigner::from_pem("").expect_err("empty").contains("no PKCS#8"));
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(TokenSigner::from_pem(sec1).expect_err("sec1").contains("PKCS#8"));
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(TokenSigner::from_pem(junk).expect_err("junk").contains("P-256"));
    }
}
