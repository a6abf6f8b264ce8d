//! A pod's volumes on the node, under `<root>/pods/<uid>/volumes/<name>`: emptyDir (medium
//! Memory is a tmpfs), hostPath, and the API-backed kinds (configMap, secret, downwardAPI,
//! projected with ServiceAccount tokens). API-backed volumes are written like upstream's atomic
//! writer: files live in a timestamped directory that `..data` points to, and each key is a
//! symlink through `..data`, so an update swaps one symlink and running containers see new
//! contents at once.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::env::{NodeAllocatable, all_containers, field_value, resource_value};
use super::source::ObjectSource;

/// Files of an API-backed volume: relative path -> (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// Tokens this pod already holds: key -> (token, expires at, unix seconds; fetched at).
#[derive(Default)]
pub struct TokenCache {
    tokens: HashMap<String, (String, i64, i64)>,
}

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// Makes every volume of `pod` ready and returns where each lives on the node.
pub async fn setup_volumes(
    pod: &Pod,
    root: &Path,
    source: &dyn ObjectSource,
    node: &NodeAllocatable,
    tokens: &mut TokenCache,
) -> Result<HashMap<String, PathBuf>, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let base = pod_dir(root, &uid).join("volumes");
    let mut paths = HashMap::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = base.join(&v.name);
        let path = setup_volume(pod, &v, &dir, source, node, tokens)
            .await
            .map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

async fn setup_volume(
    pod: &Pod,
    v: &Volume,
    dir: &Path,
    source: &dyn ObjectSource,
    node: &NodeAllocatable,
    tokens: &mut TokenCache,
) -> Result<PathBuf, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(e) = &v.empty_dir {
        mkdir(dir, 0o777)?;
        if e.medium.as_deref() == Some("Memory") && !is_mountpoint(dir) {
            let mut opts = "mode=1777".to_string();
            if let Some(limit) = &e.size_limit
                && let Some(bytes) = quantity::parse_units(&limit.0)
            {
                opts.push_str(&format!(",size={bytes}"));
            }
            run("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", &dir.to_string_lossy()])?;
        }
        return Ok(dir.to_path_buf());
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        let ty = h.type_.as_deref().unwrap_or("");
        let check = |ok: bool, what: &str| {
            if ok { Ok(()) } else { Err(format!("hostPath type check failed: {} is not a {what}", h.path)) }
        };
        match ty {
            "DirectoryOrCreate" => mkdir(&path, 0o755)?,
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    mkdir(parent, 0o755)?;
                }
                std::fs::write(&path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
            }
            "Directory" => check(path.is_dir(), "directory")?,
            "File" => check(path.is_file(), "file")?,
            "Socket" | "CharDevice" | "BlockDevice" => check(path.exists(), ty)?,
            _ => {}
        }
        return Ok(path);
    }
    if let Some(c) = &v.persistent_volume_claim {
        let pv = source.claimed_volume(&ns, &c.claim_name).await?;
        let spec = pv.spec.unwrap_or_default();
        let path = if let Some(h) = &spec.host_path {
            // A provisioned hostPath volume's directory is made on first use.
            PathBuf::from(&h.path)
        } else if let Some(l) = &spec.local {
            PathBuf::from(&l.path)
        } else {
            return Err(format!(
                "persistentvolume \"{}\": this kubelet mounts hostPath and local volumes only",
                pv.metadata.name.unwrap_or_default()
            ));
        };
        if spec.local.is_some() && !path.exists() {
            return Err(format!("local volume path {} does not exist", path.display()));
        }
        mkdir(&path, 0o777)?;
        return Ok(path);
    }
    let payload = if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        match config_map_files(source, &ns, &cm.name, cm.items.as_deref(), mode).await? {
            Some(p) => p,
            None if cm.optional == Some(true) => Payload::new(),
            None => return Err(format!("configmap \"{}\" not found", cm.name)),
        }
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        match secret_files(source, &ns, &name, s.items.as_deref(), mode).await? {
            Some(p) => p,
            None if s.optional == Some(true) => Payload::new(),
            None => return Err(format!("secret \"{name}\" not found")),
        }
    } else if let Some(d) = &v.downward_api {
        downward_files(pod, d.items.as_deref().unwrap_or(&[]), d.default_mode.unwrap_or(0o644) as u32, node)?
    } else if let Some(p) = &v.projected {
        let default_mode = p.default_mode.unwrap_or(0o644) as u32;
        let mut all = Payload::new();
        for src in p.sources.clone().unwrap_or_default() {
            let part = if let Some(cm) = &src.config_map {
                match config_map_files(source, &ns, &cm.name, cm.items.as_deref(), default_mode).await? {
                    Some(p) => p,
                    None if cm.optional == Some(true) => Payload::new(),
                    None => return Err(format!("configmap \"{}\" not found", cm.name)),
                }
            } else if let Some(s) = &src.secret {
                match secret_files(source, &ns, &s.name, s.items.as_deref(), default_mode).await? {
                    Some(p) => p,
                    None if s.optional == Some(true) => Payload::new(),
                    None => return Err(format!("secret \"{}\" not found", s.name)),
                }
            } else if let Some(d) = &src.downward_api {
                downward_files(pod, d.items.as_deref().unwrap_or(&[]), default_mode, node)?
            } else if let Some(t) = &src.service_account_token {
                let seconds = t.expiration_seconds.unwrap_or(3607);
                let token = tokens.get(pod, source, t.audience.as_deref(), seconds).await?;
                Payload::from([(t.path.clone(), (token.into_bytes(), default_mode))])
            } else {
                Payload::new()
            };
            all.extend(part);
        }
        all
    } else {
        return Err(format!(
            "volume \"{}\": this kubelet supports emptyDir, hostPath, persistentVolumeClaim (hostPath and local volumes), configMap, secret, downwardAPI and projected volumes only",
            v.name
        ));
    };
    write_atomic(dir, &payload)?;
    Ok(dir.to_path_buf())
}

impl TokenCache {
    /// A token for `pod`, fetched again once 80% of its lifetime has passed.
    async fn get(
        &mut self,
        pod: &Pod,
        source: &dyn ObjectSource,
        audience: Option<&str>,
        seconds: i64,
    ) -> Result<String, String> {
        let key = format!("{}|{seconds}", audience.unwrap_or(""));
        let now = jiff::Timestamp::now().as_second();
        if let Some((token, expires, fetched)) = self.tokens.get(&key)
            && now < fetched + (expires - fetched) * 8 / 10
        {
            return Ok(token.clone());
        }
        let (token, expiry) = source.token(pod, audience, seconds).await?;
        let expires = expiry.parse::<jiff::Timestamp>().map(|t| t.as_second()).unwrap_or(now + seconds);
        self.tokens.insert(key, (token.clone(), expires, now));
        Ok(token)
    }
}

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    what: &str,
) -> Result<Payload, String> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data.into_iter().map(|(k, v)| (k, (v, default_mode))).collect());
    };
    let mut out = Payload::new();
    for item in items {
        let Some(v) = data.get(&item.key) else {
            return Err(format!("configuration key {:?} not found in {what}", item.key));
        };
        out.insert(item.path.clone(), (v.clone(), item.mode.map(|m| m as u32).unwrap_or(default_mode)));
    }
    Ok(out)
}

async fn config_map_files(
    source: &dyn ObjectSource,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
) -> Result<Option<Payload>, String> {
    let Some(cm) = source.config_map(ns, name).await? else { return Ok(None) };
    let mut bytes: BTreeMap<String, Vec<u8>> =
        cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    bytes.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    select(bytes, items, mode, &format!("ConfigMap {ns}/{name}")).map(Some)
}

async fn secret_files(
    source: &dyn ObjectSource,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
) -> Result<Option<Payload>, String> {
    let Some(data) = source.secret(ns, name).await? else { return Ok(None) };
    select(data, items, mode, &format!("Secret {ns}/{name}")).map(Some)
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    node: &NodeAllocatable,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = all_containers(pod)
                .into_iter()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name:?} not found"))?;
            resource_value(&c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), node)?
        } else {
            String::new()
        };
        out.insert(item.path.clone(), (value.into_bytes(), item.mode.map(|m| m as u32).unwrap_or(default_mode)));
    }
    Ok(out)
}

/// What `..data` holds now, to skip rewriting an unchanged payload.
fn current_payload(dir: &Path) -> Option<Payload> {
    let data = dir.join("..data");
    if !data.exists() {
        return None;
    }
    let mut out = Payload::new();
    fn walk(base: &Path, rel: &str, out: &mut Payload) -> std::io::Result<()> {
        for e in std::fs::read_dir(base.join(rel))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let md = e.metadata()?;
            if md.is_dir() {
                walk(base, &rel_path, out)?;
            } else {
                out.insert(rel_path, (std::fs::read(e.path())?, md.permissions().mode() & 0o7777));
            }
        }
        Ok(())
    }
    walk(&data, "", &mut out).ok()?;
    Some(out)
}

/// Writes `payload` into `dir` the atomic way (see the module comment).
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    mkdir(dir, 0o755)?;
    if current_payload(dir).as_ref() == Some(payload) {
        return Ok(());
    }
    for path in payload.keys() {
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == ".." || p.starts_with("..")) {
            return Err(format!("invalid file path {path:?}"));
        }
    }
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let target = dir.join(&stamp);
    std::fs::create_dir_all(&target).map_err(io)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    for (path, (content, mode)) in payload {
        let file = target.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&file, content).map_err(io)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).map_err(io)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io)?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(io)?;
    let wanted: std::collections::BTreeSet<String> =
        payload.keys().filter_map(|p| p.split('/').next()).map(str::to_string).collect();
    for top in &wanted {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).map_err(io)?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn mkdir(dir: &Path, mode: u32) -> Result<(), String> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn is_mountpoint(dir: &Path) -> bool {
    let d = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(&*d)))
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Unmounts memory-backed emptyDirs and removes the pod's directory.
pub fn teardown(root: &Path, uid: &str) {
    let dir = pod_dir(root, uid);
    let prefix = format!("{}/", dir.to_string_lossy());
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&prefix)) {
            let _ = run("umount", &[m]);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the pod directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kubelet-vol-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn atomic_writes_swap_contents_and_drop_removed_keys() {
        let dir = tmp("atomic");
        let one = Payload::from([("a".into(), (b"1".to_vec(), 0o644)), ("sub/b".into(), (b"2".to_vec(), 0o400))]);
        write_atomic(&dir, &one).expect("first write");
        assert_eq!(std::fs::read(dir.join("a")).expect("a"), b"1");
        assert_eq!(std::fs::read(dir.join("sub/b")).expect("b"), b"2");
        let mode = std::fs::metadata(dir.join("sub/b")).expect("md").permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let first_target = std::fs::read_link(dir.join("..data")).expect("link");
        write_atomic(&dir, &one).expect("same again");
        assert_eq!(
            std::fs::read_link(dir.join("..data")).expect("link"),
            first_target,
            "unchanged payload is not rewritten"
        );
        let two = Payload::from([("a".into(), (b"changed".to_vec(), 0o644))]);
        write_atomic(&dir, &two).expect("update");
        assert_eq!(std::fs::read(dir.join("a")).expect("a"), b"changed");
        assert!(!dir.join("sub").exists(), "removed keys disappear");
        assert!(!dir.join(first_target).exists(), "the old generation is removed");
        assert!(write_atomic(&dir, &Payload::from([("../x".into(), (vec![], 0o644))])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
