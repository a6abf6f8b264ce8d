//! Authentication by bearer token: static tokens from a token file (upstream's
//! `--token-auth-file` format: `token,user,uid[,"group1,group2"]`, one per line), and service
//! account tokens ([`crate::satoken`]) whose service account, and bound pod or secret, still
//! exist with the uids the token names, and legacy tokens while their Secret still holds them and
//! their service account still exists with the uid named (upstream's legacy lookup).
//!
//! Anonymous requests may only reach the health and version endpoints, as upstream's default
//! RBAC (`system:public-info-viewer`) allows; everything else answers 401.
//!
//! Authorization: every authenticated user may do everything; RBAC is not built yet. [`allows`]
//! says so in the answers to access reviews.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::rest::Store;
use crate::satoken::{LegacyClaims, Signer};

pub const AUTHENTICATED: &str = "system:authenticated";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The user as an authentication.k8s.io UserInfo.
    pub fn info(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = self.uid.clone().into();
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

/// Whether `user` may do what an access review asks, and why, while there is no RBAC.
pub fn allows(user: &User, non_resource_path: Option<&str>) -> (bool, String) {
    if user.groups.iter().any(|g| g == AUTHENTICATED) {
        return (true, "no RBAC yet: every authenticated user may do everything".into());
    }
    match non_resource_path {
        Some(p) if is_public_path(p) => (true, "health and version endpoints are public".into()),
        _ => (false, "only authenticated users may use the API".into()),
    }
}

/// Every way a request may authenticate.
#[derive(Debug, Default)]
pub struct Authenticator {
    pub tokens: TokenAuthenticator,
    pub service_accounts: Option<Arc<Signer>>,
}

/// The token of an `Authorization: Bearer` header value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Authenticator {
    /// The user behind an `Authorization` header value, if any.
    pub async fn authenticate(&self, authorization: Option<&str>, store: &Store) -> Option<User> {
        self.authenticate_token(bearer(authorization)?, None, store).await
    }

    /// The user a token stands for; service account tokens must be meant for one of
    /// `audiences` (default: the apiserver's).
    pub async fn authenticate_token(&self, token: &str, audiences: Option<&[String]>, store: &Store) -> Option<User> {
        if let Some(mut u) = self.tokens.lookup(token) {
            if !u.groups.iter().any(|g| g == AUTHENTICATED) {
                u.groups.push(AUTHENTICATED.into());
            }
            return Some(u);
        }
        let signer = self.service_accounts.as_ref()?;
        if let Some(legacy) = signer.verify_legacy(token) {
            // Legacy tokens name no audience: they are meant for the apiserver alone.
            if audiences.is_some_and(|wanted| !wanted.iter().any(|a| signer.audiences.contains(a))) {
                return None;
            }
            return authenticate_legacy(legacy, token, store).await;
        }
        let claims = signer.verify_for(token, jiff::Timestamp::now().as_second(), audiences)?;
        let reg = &store.registry;
        let current = |plural: &'static str, ns: String, name: String, uid: String| async move {
            let info = reg.by_plural("", plural)?;
            let obj = store.get_value(info, &ns, &name).await.ok()?;
            let live = crate::meta::uid(&obj) == uid && !crate::meta::is_deleting(&obj);
            live.then_some(())
        };
        let ns = claims.namespace.clone();
        current("serviceaccounts", ns.clone(), claims.service_account.clone(), claims.service_account_uid.clone())
            .await?;
        let mut extra = BTreeMap::new();
        extra.insert("authentication.kubernetes.io/credential-id".to_string(), vec![format!("JTI={}", claims.id)]);
        if let Some((kind, name, uid)) = &claims.bound {
            match kind.as_str() {
                "Pod" => {
                    current("pods", ns.clone(), name.clone(), uid.clone()).await?;
                    extra.insert("authentication.kubernetes.io/pod-name".into(), vec![name.clone()]);
                    extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![uid.clone()]);
                }
                "Secret" => current("secrets", ns.clone(), name.clone(), uid.clone()).await?,
                _ => {}
            }
        }
        if let Some((name, uid)) = &claims.node {
            extra.insert("authentication.kubernetes.io/node-name".into(), vec![name.clone()]);
            extra.insert("authentication.kubernetes.io/node-uid".into(), vec![uid.clone()]);
        }
        Some(User {
            name: format!("system:serviceaccount:{ns}:{}", claims.service_account),
            uid: claims.service_account_uid,
            groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), AUTHENTICATED.into()],
            extra,
        })
    }
}

/// The user of a verified legacy token, if its Secret and service account still back it.
async fn authenticate_legacy(claims: LegacyClaims, token: &str, store: &Store) -> Option<User> {
    let read = |plural: &'static str, name: String| {
        let ns = claims.namespace.clone();
        async move {
            let info = store.registry.by_plural("", plural)?;
            store.get_value(info, &ns, &name).await.ok()
        }
    };
    let secret = read("secrets", claims.secret_name.clone()).await;
    let account = read("serviceaccounts", claims.service_account.clone()).await;
    if !legacy_token_current(&claims, token, secret.as_ref(), account.as_ref()) {
        return None;
    }
    let ns = &claims.namespace;
    Some(User {
        name: format!("system:serviceaccount:{ns}:{}", claims.service_account),
        uid: claims.service_account_uid.clone(),
        groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), AUTHENTICATED.into()],
        extra: BTreeMap::new(),
    })
}

/// Whether a legacy token is still good: its Secret exists, is not being deleted and holds
/// exactly this token, and its service account exists, is not being deleted and has the uid the
/// token names. Deleting the Secret (or the account) revokes the token.
pub fn legacy_token_current(
    claims: &LegacyClaims,
    token: &str,
    secret: Option<&serde_json::Value>,
    account: Option<&serde_json::Value>,
) -> bool {
    use base64::Engine;
    let (Some(secret), Some(account)) = (secret, account) else { return false };
    let held = secret
        .pointer("/data/token")
        .and_then(serde_json::Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    held.as_deref() == Some(token.as_bytes())
        && !crate::meta::is_deleting(secret)
        && !crate::meta::is_deleting(account)
        && crate::meta::uid(account) == claims.service_account_uid
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

#[derive(Debug, Default, Clone)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, User>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("token file {path} line {line}: {reason}")]
    Parse { path: String, line: usize, reason: String },
}

/// Splits one CSV record; a field in double quotes may contain commas.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

impl TokenAuthenticator {
    pub fn parse(path: &str, text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(TokenFileError::Parse {
                    path: path.into(),
                    line: i + 1,
                    reason: "expected token,user,uid[,\"groups\"]".into(),
                });
            }
            let groups = f
                .get(3)
                .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            tokens.insert(f[0].clone(), User { name: f[1].clone(), uid: f[2].clone(), groups, ..Default::default() });
        }
        Ok(TokenAuthenticator { tokens })
    }

    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Read { path: path.display().to_string(), source })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// The user behind an `Authorization` header value, if it carries a known bearer token.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<User> {
        self.lookup(bearer(authorization)?)
    }

    pub fn lookup(&self, token: &str) -> Option<User> {
        self.tokens.get(token).cloned()
    }

    /// A token of a `system:masters` user, for writing the admin kubeconfig.
    pub fn admin_token(&self) -> Option<&str> {
        let mut admins: Vec<(&String, &User)> = self.tokens.iter().filter(|(_, u)| u.is_admin()).collect();
        admins.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        admins.first().map(|(t, _)| t.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Paths anonymous clients may read.
pub fn is_public_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(p, "/version" | "/healthz" | "/livez" | "/readyz")
        || p.starts_with("/healthz/")
        || p.starts_with("/livez/")
        || p.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_follow_the_upstream_csv_format() {
        let a = TokenAuthenticator::parse(
            "t.csv",
            "# comment\nsecret1,admin,uid-1,\"system:masters,dev\"\nsecret2,alice,uid-2\n",
        )
        .expect("parses");
        let admin = a.authenticate(Some("Bearer secret1")).expect("admin");
        assert_eq!(admin.groups, vec!["system:masters", "dev"]);
        assert!(admin.is_admin());
        assert_eq!(a.authenticate(Some("bearer secret2")).expect("alice").name, "alice");
        assert!(a.authenticate(Some("Bearer nope")).is_none());
        assert!(a.authenticate(Some("Basic secret1")).is_none());
        assert!(a.authenticate(None).is_none());
        assert_eq!(a.admin_token(), Some("secret1"));
    }

    #[test]
    fn malformed_token_lines_name_the_line() {
        let err = TokenAuthenticator::parse("t.csv", "ok,u,1\nbroken\n").expect_err("bad");
        assert_eq!(err.to_string(), "token file t.csv line 2: expected token,user,uid[,\"groups\"]");
    }

    #[test]
    fn a_legacy_token_holds_only_while_its_secret_holds_it_and_its_account_keeps_its_uid() {
        use base64::Engine;
        let claims = LegacyClaims {
            namespace: "default".into(),
            secret_name: "robot-token".into(),
            service_account: "robot".into(),
            service_account_uid: "uid-1".into(),
        };
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let secret = serde_json::json!({"metadata": {"name": "robot-token"}, "data": {"token": b64("tok")}});
        let account = serde_json::json!({"metadata": {"name": "robot", "uid": "uid-1"}});
        let deleting = |mut v: serde_json::Value| {
            v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
            v
        };
        assert!(legacy_token_current(&claims, "tok", Some(&secret), Some(&account)));
        assert!(!legacy_token_current(&claims, "other", Some(&secret), Some(&account)), "the secret holds another");
        assert!(!legacy_token_current(&claims, "tok", None, Some(&account)), "the secret is gone");
        assert!(!legacy_token_current(&claims, "tok", Some(&secret), None), "the account is gone");
        assert!(!legacy_token_current(&claims, "tok", Some(&deleting(secret.clone())), Some(&account)));
        assert!(!legacy_token_current(&claims, "tok", Some(&secret), Some(&deleting(account.clone()))));
        let recreated = serde_json::json!({"metadata": {"name": "robot", "uid": "uid-2"}});
        assert!(!legacy_token_current(&claims, "tok", Some(&secret), Some(&recreated)), "a new account of that name");
        let empty = serde_json::json!({"metadata": {"name": "robot-token"}});
        assert!(!legacy_token_current(&claims, "", Some(&empty), Some(&account)), "no token in the secret");
    }

    #[test]
    fn only_health_and_version_are_public() {
        for p in ["/version", "/version/", "/healthz", "/readyz/etcd", "/livez"] {
            assert!(is_public_path(p), "{p}");
        }
        for p in ["/api", "/apis", "/api/v1/pods", "/openapi/v3", "/metrics"] {
            assert!(!is_public_path(p), "{p}");
        }
    }
}
