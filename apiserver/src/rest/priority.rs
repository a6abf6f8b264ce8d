//! Priority admission, as upstream's `Priority` admission plugin: a new pod's `spec.priority`
//! and `spec.preemptionPolicy` come from the PriorityClass it names (or from the global default
//! class), at most one class is the global default, and the built-in classes cannot be deleted.
//!
//! Pod creates must not pay a storage read for this, so classes are followed by a
//! [`Reflector`]. A class the reflector knows is used as it is (value and preemption policy
//! never change once created); a name it does not know is looked up in storage before the pod is
//! refused, so a class created a moment ago always works. Within the watch's delay, a class just
//! deleted (or deleted and created again) may still be used as it was, and a global default set
//! a moment ago may not apply yet to the next pod: upstream's informer has the same window.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::reflector::Reflector;
use super::{Store, WriteOptions, storage_error};
use crate::codec::{self, Decoded};
use crate::error::{ApiError, ApiResult};
use crate::kinds::{self, DEFAULT_PRIORITY, PREEMPT_LOWER_PRIORITY};
use crate::meta;
use crate::resources::ResourceInfo;

pub const GROUP: &str = "scheduling.k8s.io";
pub const PLURAL: &str = "priorityclasses";

/// What admission needs of one PriorityClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub value: i64,
    pub preemption_policy: Option<String>,
    pub global_default: bool,
}

impl Class {
    pub fn of(obj: &Value) -> Class {
        Class {
            value: obj.get("value").and_then(Value::as_i64).unwrap_or(0),
            preemption_policy: obj.get("preemptionPolicy").and_then(Value::as_str).map(str::to_string),
            global_default: obj.get("globalDefault").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

/// PriorityClass name -> what admission needs of it.
pub type PriorityClassCache = Reflector<Class>;

pub fn new_cache() -> PriorityClassCache {
    Reflector::new(PLURAL, Class::of)
}

pub fn is_priority_class(info: &ResourceInfo) -> bool {
    info.group == GROUP && info.plural == PLURAL
}

fn is_pod(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "pods"
}

/// The global default among `classes`: if a race left several, the one with the lowest value
/// (then name, so every apiserver picks the same), as upstream.
pub fn global_default(classes: &HashMap<String, Class>) -> Option<(String, Class)> {
    classes
        .iter()
        .filter(|(_, c)| c.global_default)
        .min_by(|(an, a), (bn, b)| a.value.cmp(&b.value).then_with(|| an.cmp(bn)))
        .map(|(n, c)| (n.clone(), c.clone()))
}

/// What admission settles on for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Set as the pod's `priorityClassName` when it named none (the global default's name).
    pub default_class: Option<String>,
    pub value: i64,
    pub preemption_policy: Option<String>,
}

impl Resolved {
    pub fn named(class: &Class) -> Resolved {
        Resolved { default_class: None, value: class.value, preemption_policy: class.preemption_policy.clone() }
    }

    /// From the global default class, or priority 0 and `PreemptLowerPriority` without one.
    pub fn default(class: Option<(String, Class)>) -> Resolved {
        match class {
            Some((name, c)) => {
                Resolved { default_class: Some(name), value: c.value, preemption_policy: c.preemption_policy }
            }
            None => Resolved {
                default_class: None,
                value: DEFAULT_PRIORITY,
                preemption_policy: Some(PREEMPT_LOWER_PRIORITY.into()),
            },
        }
    }
}

/// Writes `r` into a new pod's spec. A pod may repeat the resolved values but not contradict
/// them: `Err` says why, for a 403.
pub fn admit_pod(pod: &mut Value, r: &Resolved) -> Result<(), String> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    if let Some(given) = spec.get("priority").filter(|v| !v.is_null())
        && given.as_i64() != Some(r.value)
    {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
            r.value
        ));
    }
    if let Some(policy) = &r.preemption_policy
        && let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        ));
    }
    if !pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"] = json!({});
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if let Some(name) = &r.default_class {
        spec.insert("priorityClassName".into(), json!(name));
    }
    spec.insert("priority".into(), json!(r.value));
    if let Some(policy) = &r.preemption_policy {
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

fn forbidden(info: &ResourceInfo, name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::Forbidden(format!("{} \"{name}\" is forbidden: {why}", info.qualified_resource()))
}

impl Store {
    /// Keeps the PriorityClass cache current until shutdown.
    pub(super) async fn run_priority_class_cache(&self, shutdown: CancellationToken) {
        let Some(info) = self.registry.by_plural(GROUP, PLURAL) else { return };
        self.priority_classes.run(self.storage.clone(), info.list_prefix(""), shutdown).await;
    }

    /// Creates the built-in classes that do not exist yet; existing ones are left as they are.
    pub async fn create_system_priority_classes(&self) -> ApiResult<()> {
        let info =
            self.registry.by_plural(GROUP, PLURAL).ok_or_else(|| ApiError::Internal(format!("{PLURAL} not served")))?;
        let opts = WriteOptions { field_manager: Some("kube-apiserver".into()), ..Default::default() };
        for class in kinds::SYSTEM_PRIORITY_CLASSES {
            let obj = json!({"metadata": {"name": class.name}, "value": class.value, "description": class.description});
            match self.create(info, "", Decoded { value: obj, duplicates: Vec::new() }, &opts).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Admission of a new object, before its defaults and validation: pods get their priority.
    pub(super) async fn admit_create(&self, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        if !is_pod(info) {
            return Ok(());
        }
        let class_name = obj.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or("").to_string();
        let resolved = if class_name.is_empty() {
            Resolved::default(self.default_priority_class().await?)
        } else {
            match self.priority_class(&class_name).await? {
                Some(class) => Resolved::named(&class),
                None => {
                    let why = format!("no PriorityClass with name {class_name} was found");
                    return Err(forbidden(info, meta::name(obj), why));
                }
            }
        };
        admit_pod(obj, &resolved).map_err(|why| forbidden(info, meta::name(obj), why))?;
        crate::kinds::default_toleration_seconds(obj);
        Ok(())
    }

    /// Checks a PriorityClass about to be written (`creating` or updating) against the others:
    /// it may not become a second global default. Reads storage: class writes are rare, and a
    /// default set a moment ago must count.
    pub(super) async fn admit_priority_class(&self, info: &ResourceInfo, obj: &Value, creating: bool) -> ApiResult<()> {
        if !is_priority_class(info) || !Class::of(obj).global_default {
            return Ok(());
        }
        let name = meta::name(obj);
        if let Some((current, _)) = global_default(&self.list_priority_classes(info).await?)
            && (creating || current != name)
        {
            let why = format!("PriorityClass {current} is already marked as default. Only one default can exist");
            return Err(forbidden(info, name, why));
        }
        Ok(())
    }

    /// The built-in classes are not deleted, as upstream refuses.
    pub(super) fn admit_delete(&self, info: &ResourceInfo, name: &str) -> ApiResult<()> {
        if is_priority_class(info) && kinds::is_system_priority_class(name) {
            return Err(forbidden(info, name, "this is a system priority class and cannot be deleted"));
        }
        Ok(())
    }

    /// The class named, from the cache when it knows it, else from storage.
    async fn priority_class(&self, name: &str) -> ApiResult<Option<Class>> {
        if let Some(class) = self.priority_classes.get(name) {
            return Ok(Some(class));
        }
        let Some(info) = self.registry.by_plural(GROUP, PLURAL) else { return Ok(None) };
        let kv = self.storage.get(&info.key("", name)).await.map_err(|e| storage_error(info, name, e))?;
        kv.map(|kv| codec::decode_stored(&kv.value, kv.mod_revision).map(|obj| Class::of(&obj))).transpose()
    }

    /// The global default class, from the cache once it has synced, else from storage.
    async fn default_priority_class(&self) -> ApiResult<Option<(String, Class)>> {
        if let Some(found) = self.priority_classes.read(global_default) {
            return Ok(found);
        }
        let Some(info) = self.registry.by_plural(GROUP, PLURAL) else { return Ok(None) };
        Ok(global_default(&self.list_priority_classes(info).await?))
    }

    /// Every class, read from storage.
    async fn list_priority_classes(&self, info: &ResourceInfo) -> ApiResult<HashMap<String, Class>> {
        let page =
            self.storage.list(&info.list_prefix(""), None, 0, 0).await.map_err(|e| storage_error(info, "", e))?;
        page.items
            .iter()
            .map(|kv| {
                let obj = codec::decode_stored(&kv.value, kv.mod_revision)?;
                Ok((meta::name(&obj).to_string(), Class::of(&obj)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(value: i64, policy: &str, global_default: bool) -> Class {
        Class { value, preemption_policy: Some(policy.into()), global_default }
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_named_class_sets_priority_and_preemption_policy() {
        let mut p = pod(json!({"priorityClassName": "high", "containers": []}));
        admit_pod(&mut p, &Resolved::named(&class(1000, "Never", false))).expect("admitted");
        assert_eq!(p["spec"]["priority"], 1000);
        assert_eq!(p["spec"]["preemptionPolicy"], "Never");
        assert_eq!(p["spec"]["priorityClassName"], "high");
    }

    #[test]
    fn the_global_default_names_itself_and_without_one_priority_is_zero() {
        let mut p = pod(json!({}));
        admit_pod(&mut p, &Resolved::default(Some(("low".into(), class(-5, "Never", true))))).expect("admitted");
        assert_eq!((&p["spec"]["priorityClassName"], &p["spec"]["priority"]), (&json!("low"), &json!(-5)));
        let mut p = pod(json!({}));
        admit_pod(&mut p, &Resolved::default(None)).expect("admitted");
        assert_eq!(p["spec"]["priority"], 0);
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert!(p["spec"].get("priorityClassName").is_none());
    }

    #[test]
    fn a_pod_may_repeat_but_not_contradict_what_its_class_says() {
        let high = Resolved::named(&class(1000, "PreemptLowerPriority", false));
        let mut same = pod(json!({"priority": 1000, "preemptionPolicy": "PreemptLowerPriority"}));
        assert_eq!(admit_pod(&mut same, &high), Ok(()));
        let mut other = pod(json!({"priority": 7}));
        assert_eq!(
            admit_pod(&mut other, &high),
            Err("the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name".into())
        );
        assert!(other["spec"].get("preemptionPolicy").is_none(), "nothing changes when refused");
        let mut never = pod(json!({"preemptionPolicy": "Never"}));
        assert!(admit_pod(&mut never, &high).expect_err("refused").contains("PreemptionPolicy (Never)"));
    }

    #[test]
    fn of_several_global_defaults_the_lowest_value_wins() {
        let classes: HashMap<String, Class> = [
            ("a".to_string(), class(10, "Never", true)),
            ("b".to_string(), class(5, "Never", true)),
            ("c".to_string(), class(1, "Never", false)),
        ]
        .into();
        assert_eq!(global_default(&classes).map(|(n, _)| n), Some("b".to_string()));
        assert_eq!(global_default(&HashMap::new()), None);
    }
}
