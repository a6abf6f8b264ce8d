//! Service account tokens: JWTs signed ES256 (ECDSA P-256, SHA-256) with the service account
//! key, as `TokenRequest` issues them and bearer authentication accepts them.
//!
//! The claims follow upstream's bound tokens: `iss`, `sub` (`system:serviceaccount:<ns>:<name>`),
//! `aud`, `exp`, `iat`, `nbf`, `jti`, and `kubernetes.io` naming the namespace, the service
//! account and the object the token is bound to (a pod, secret or node), each with its uid.
//! The key is `--service-account-signing-key-file`, or `sa.key` generated in the certificate
//! directory on first start. The key id (`kid`) is the unpadded base64url SHA-256 of the public
//! key's DER SubjectPublicKeyInfo, as upstream computes it; `/openid/v1/jwks` publishes the key.
//!
//! Legacy tokens, which the controller-manager's token controller signs with the same key and
//! writes into `kubernetes.io/service-account-token` Secrets, have issuer [`LEGACY_ISSUER`], flat
//! `kubernetes.io/serviceaccount/...` claims, no audience and no expiry: they hold for as long as
//! their Secret holds them ([`crate::auth`] checks that on every request).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `iss` of the legacy tokens held in Secrets, as upstream.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// Clock skew tolerated on `nbf` and `exp`, as upstream's validator allows.
const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {why}")]
    Read { path: String, why: String },
    #[error("generating the service account key: {0}")]
    Generate(String),
}

pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
    /// `iss` of issued tokens, and the only issuer accepted.
    pub issuer: String,
    /// What `aud` defaults to, and what an accepted token's `aud` must include one of.
    pub audiences: Vec<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(kid={}, iss={})", self.kid, self.issuer)
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// The object the token is bound to: kind, name, uid.
    pub bound: Option<(String, String, String)>,
    pub node: Option<(String, String)>,
    pub id: String,
}

/// Who a legacy (Secret-held) token speaks for: every claim is required, as upstream's legacy
/// validator requires them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyClaims {
    pub namespace: String,
    pub secret_name: String,
    pub service_account: String,
    pub service_account_uid: String,
}

impl Signer {
    /// The key in `path` (PKCS#8 PEM, EC P-256); generated and written (mode 0600) when
    /// `generate` is set and the file does not exist.
    pub fn load(path: &Path, generate: bool, issuer: String, audiences: Vec<String>) -> Result<Signer, KeyError> {
        let read_err = |why: String| KeyError::Read { path: path.display().to_string(), why };
        if generate && !path.exists() {
            let pair = rcgen::KeyPair::generate().map_err(|e| KeyError::Generate(e.to_string()))?;
            write_private(path, pair.serialize_pem().as_bytes()).map_err(|e| read_err(e.to_string()))?;
        }
        let pem = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| read_err(format!("not a PKCS#8 private key: {e}")))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der(), &rng)
            .map_err(|_| read_err("the service account key must be an ECDSA P-256 key".into()))?;
        let kid = B64
            .encode(ring::digest::digest(&ring::digest::SHA256, &rcgen::PublicKeyData::subject_public_key_info(&pair)));
        let audiences = if audiences.is_empty() { vec![issuer.clone()] } else { audiences };
        Ok(Signer { key, kid, rng, issuer, audiences })
    }

    /// A signed token for `claims`, valid from `now` (unix seconds) for `seconds`.
    pub fn issue(&self, claims: &TokenClaims, audiences: &[String], now: i64, seconds: i64) -> String {
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
        });
        if let Some((kind, name, uid)) = &claims.bound {
            k8s[kind.to_ascii_lowercase()] = json!({"name": name, "uid": uid});
        }
        if let Some((name, uid)) = &claims.node {
            k8s["node"] = json!({"name": name, "uid": uid});
        }
        let body = json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": claims.id,
            "kubernetes.io": k8s,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
        });
        self.sign(&body)
    }

    fn sign(&self, body: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(body.to_string()));
        let sig =
            self.key.sign(&self.rng, signing_input.as_bytes()).map(|s| B64.encode(s.as_ref())).unwrap_or_default();
        format!("{signing_input}.{sig}")
    }

    /// The claims of a token signed with this key, whatever its issuer: the signature alone.
    fn signed_body(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.key.public_key());
        public.verify(format!("{h}.{b}").as_bytes(), &B64.decode(s).ok()?).ok()?;
        serde_json::from_slice(&B64.decode(b).ok()?).ok()
    }

    /// The claims of a legacy token signed with this key ([`LEGACY_ISSUER`]). Legacy tokens do
    /// not expire; the caller checks that the Secret still holds this token and that the service
    /// account still exists with the uid named.
    pub fn verify_legacy(&self, token: &str) -> Option<LegacyClaims> {
        let body = self.signed_body(token)?;
        if body.get("iss").and_then(Value::as_str) != Some(LEGACY_ISSUER) {
            return None;
        }
        let claim = |name: &str| {
            body.get(format!("kubernetes.io/serviceaccount/{name}"))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(String::from)
        };
        Some(LegacyClaims {
            namespace: claim("namespace")?,
            secret_name: claim("secret.name")?,
            service_account: claim("service-account.name")?,
            service_account_uid: claim("service-account.uid")?,
        })
    }

    /// The claims of a token this signer issued, checked for signature, issuer, audience and
    /// validity at `now`. The caller still checks that the named objects exist.
    pub fn verify(&self, token: &str, now: i64) -> Option<TokenClaims> {
        self.verify_for(token, now, None)
    }

    /// [`Signer::verify`] for tokens meant for one of `audiences` (`None`: the apiserver's).
    pub fn verify_for(&self, token: &str, now: i64, audiences: Option<&[String]>) -> Option<TokenClaims> {
        let body = self.signed_body(token)?;
        if body.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return None;
        }
        let aud: Vec<&str> = match body.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let wanted = audiences.unwrap_or(&self.audiences);
        if !aud.iter().any(|a| wanted.iter().any(|x| x == a)) {
            return None;
        }
        let exp = body.get("exp").and_then(Value::as_i64)?;
        let nbf = body.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now > exp + LEEWAY_SECONDS || now + LEEWAY_SECONDS < nbf {
            return None;
        }
        let k8s = body.get("kubernetes.io")?;
        let s = |p: &str| k8s.pointer(p).and_then(Value::as_str).map(String::from);
        let bound = ["pod", "secret"].iter().find_map(|kind| {
            let name = s(&format!("/{kind}/name"))?;
            let kind = if *kind == "pod" { "Pod" } else { "Secret" };
            Some((kind.to_string(), name, s(&format!("/{}/uid", kind.to_ascii_lowercase())).unwrap_or_default()))
        });
        let node = s("/node/name").map(|n| (n, s("/node/uid").unwrap_or_default()));
        let bound = bound.or_else(|| node.clone().map(|(n, u)| ("Node".to_string(), n, u)));
        Some(TokenClaims {
            namespace: s("/namespace")?,
            service_account: s("/serviceaccount/name")?,
            service_account_uid: s("/serviceaccount/uid").unwrap_or_default(),
            bound,
            node,
            id: body.get("jti").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }

    /// The public key as a JSON Web Key Set, for `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y (32 bytes each).
        let point = self.key.public_key().as_ref();
        let (x, y) = point.get(1..).map(|xy| xy.split_at(32)).unwrap_or((&[], &[]));
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(x), "y": B64.encode(y),
        }]})
    }

    /// `/.well-known/openid-configuration` for this issuer.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("satoken-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn signer(dir: &Path) -> Signer {
        Signer::load(&dir.join("sa.key"), true, DEFAULT_ISSUER.into(), Vec::new()).expect("key")
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            namespace: "default".into(),
            service_account: "robot".into(),
            service_account_uid: "uid-1".into(),
            bound: Some(("Pod".into(), "web".into(), "uid-p".into())),
            node: None,
            id: "jti-1".into(),
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire_and_only_with_this_key() {
        let dir = tempdir("a");
        let s = signer(dir.path());
        let t = s.issue(&claims(), &s.audiences.clone(), 1_000_000, 600);
        assert_eq!(s.verify(&t, 1_000_100), Some(claims()));
        assert_eq!(s.verify(&t, 1_000_600 + LEEWAY_SECONDS + 1), None, "expired");
        assert_eq!(s.verify(&t, 1_000_000 - LEEWAY_SECONDS - 1), None, "not yet valid");
        // The key is reused on the next start; another key does not accept the token.
        assert_eq!(signer(dir.path()).verify(&t, 1_000_100), Some(claims()));
        let other = tempdir("b");
        assert_eq!(signer(other.path()).verify(&t, 1_000_100), None);
        // Tampering with the claims breaks the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged =
            B64.encode(String::from_utf8(B64.decode(parts[1]).expect("b64")).expect("utf8").replace("robot", "admin"));
        parts[1] = &forged;
        assert_eq!(s.verify(&parts.join("."), 1_000_100), None);
        assert_eq!(s.verify("not.a.token", 1_000_100), None);
    }

    fn legacy_body() -> Value {
        json!({
            "iss": LEGACY_ISSUER,
            "sub": "system:serviceaccount:default:robot",
            "kubernetes.io/serviceaccount/namespace": "default",
            "kubernetes.io/serviceaccount/secret.name": "robot-token",
            "kubernetes.io/serviceaccount/service-account.name": "robot",
            "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
        })
    }

    #[test]
    fn legacy_tokens_verify_with_this_key_without_expiry_and_need_every_claim() {
        let dir = tempdir("legacy");
        let s = signer(dir.path());
        let t = s.sign(&legacy_body());
        let want = LegacyClaims {
            namespace: "default".into(),
            secret_name: "robot-token".into(),
            service_account: "robot".into(),
            service_account_uid: "uid-1".into(),
        };
        assert_eq!(s.verify_legacy(&t), Some(want));
        assert_eq!(s.verify(&t, 1_000_000), None, "not a bound token");
        let other = tempdir("legacy-other");
        assert_eq!(signer(other.path()).verify_legacy(&t), None, "another key");
        let bound = s.issue(&claims(), &s.audiences.clone(), 1_000_000, 600);
        assert_eq!(s.verify_legacy(&bound), None, "a bound token is not a legacy one");
        for missing in ["namespace", "secret.name", "service-account.name", "service-account.uid"] {
            let mut body = legacy_body();
            body.as_object_mut().expect("object").remove(&format!("kubernetes.io/serviceaccount/{missing}"));
            assert_eq!(s.verify_legacy(&s.sign(&body)), None, "without {missing}");
        }
        let mut body = legacy_body();
        body["iss"] = json!("someone-else");
        assert_eq!(s.verify_legacy(&s.sign(&body)), None, "another issuer");
    }

    #[test]
    fn audiences_must_overlap_and_the_key_is_published_as_a_jwk() {
        let dir = tempdir("c");
        let s = signer(dir.path());
        let t = s.issue(&claims(), &["vault".to_string()], 1_000_000, 600);
        assert_eq!(s.verify(&t, 1_000_100), None, "not for the apiserver");
        let jwks = s.jwks();
        assert_eq!(jwks["keys"][0]["kid"], s.kid);
        assert_eq!(B64.decode(jwks["keys"][0]["x"].as_str().expect("x")).expect("b64").len(), 32);
        let header: Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().expect("header")).expect("b64")).expect("json");
        assert_eq!(header["kid"], s.kid);
        assert_eq!(s.openid_configuration()["jwks_uri"], format!("{DEFAULT_ISSUER}/openid/v1/jwks"));
    }
}
