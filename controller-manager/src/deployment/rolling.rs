//! The replica arithmetic of a rollout, pure, as upstream's deployment controller does it:
//! how far the new ReplicaSet may grow (maxSurge), how far old ones may shrink (maxUnavailable,
//! unhealthy replicas first), and how a resize in mid-rollout is spread over the sets in
//! proportion to their size (proportional scaling).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A ReplicaSet as the arithmetic sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Set {
    pub name: String,
    /// spec.replicas
    pub replicas: i32,
    /// status.availableReplicas
    pub available: i32,
    pub created: Option<Timestamp>,
    /// The max-replicas annotation (the Deployment's size plus surge when last scaled).
    pub max_replicas: Option<i32>,
}

/// An IntOrString against `total`: percentages round up for surge, down for unavailability.
pub fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> Result<i32, String> {
    let s = match v {
        Some(IntOrString::Int(i)) => return Ok(*i),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let pct: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| {
        format!("invalid value for IntOrString: invalid value {s:?}: must be an integer or percentage")
    })?;
    let scaled = pct * total as i64;
    Ok(if round_up { (scaled + 99) / 100 } else { scaled / 100 } as i32)
}

/// (maxSurge, maxUnavailable) resolved as upstream's fenceposts: both zero makes
/// maxUnavailable one, so a rollout can always make progress.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), String> {
    let s = resolve(surge, replicas, true, "25%")?;
    let u = resolve(unavailable, replicas, false, "25%")?;
    Ok(if s == 0 && u == 0 { (0, 1) } else { (s, u) })
}

/// The new set's size this step: grow toward `replicas` while all sets together stay within
/// `replicas + max_surge`.
pub fn new_replicas(replicas: i32, max_surge: i32, new: &Set, all: &[Set]) -> i32 {
    if new.replicas >= replicas {
        return replicas;
    }
    let current: i32 = all.iter().map(|s| s.replicas).sum();
    let max_total = replicas + max_surge;
    if current >= max_total {
        return new.replicas;
    }
    new.replicas + (max_total - current).min(replicas - new.replicas)
}

/// How old sets (oldest first) shrink this step: first unhealthy replicas (not available), as
/// far as `replicas - max_unavailable` available pods overall allows counting the new set's
/// unavailable ones; then available ones down to that minimum. Returns (name, new size) for
/// each set that changes.
pub fn scale_down_old(replicas: i32, max_unavailable: i32, new: Option<&Set>, old: &[Set]) -> Vec<(String, i32)> {
    let mut old: Vec<Set> = old.to_vec();
    old.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    if old.iter().map(|s| s.replicas).sum::<i32>() == 0 {
        return vec![];
    }
    let all_pods: i32 = old.iter().map(|s| s.replicas).sum::<i32>() + new.map_or(0, |n| n.replicas);
    let min_available = replicas - max_unavailable.min(replicas);
    let new_unavailable = new.map_or(0, |n| (n.replicas - n.available).max(0));
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return vec![];
    }
    let mut changed: Vec<(String, i32)> = Vec::new();
    let set =
        |changed: &mut Vec<(String, i32)>, name: &str, size: i32| match changed.iter_mut().find(|(n, _)| n == name) {
            Some(c) => c.1 = size,
            None => changed.push((name.to_string(), size)),
        };
    // Unhealthy replicas go first: removing them costs no availability.
    let mut cleaned = 0;
    for s in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = s.replicas - s.available;
        if s.replicas == 0 || unhealthy <= 0 {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(unhealthy);
        s.replicas -= down;
        cleaned += down;
        set(&mut changed, &s.name, s.replicas);
    }
    // Then available ones, down to the minimum available.
    let available: i32 = old.iter().map(|s| s.available.min(s.replicas)).sum::<i32>() + new.map_or(0, |n| n.available);
    let mut budget = available - min_available;
    for s in old.iter_mut() {
        if budget <= 0 {
            break;
        }
        if s.replicas == 0 {
            continue;
        }
        let down = s.replicas.min(budget);
        s.replicas -= down;
        budget -= down;
        set(&mut changed, &s.name, s.replicas);
    }
    changed
}

/// Spreads a change of the Deployment's size over its active sets in proportion to their size
/// (each set's share from its max-replicas annotation), the rounding leftover to the largest.
/// `newest_first` orders sets of equal size when adding. Returns every set's new size.
pub fn proportional(replicas: i32, max_surge: i32, status_replicas: i32, sets: &[Set]) -> Vec<(String, i32)> {
    let allowed = if replicas > 0 { replicas + max_surge } else { 0 };
    let current: i32 = sets.iter().map(|s| s.replicas).sum();
    let to_add = allowed - current;
    let mut sets: Vec<&Set> = sets.iter().collect();
    // Larger first; among equals newer first when adding, older first when removing.
    sets.sort_by(|a, b| {
        b.replicas
            .cmp(&a.replicas)
            .then_with(|| if to_add > 0 { b.created.cmp(&a.created) } else { a.created.cmp(&b.created) })
    });
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::new();
    for s in &sets {
        let share = if to_add == 0 || s.replicas == 0 || to_add == added {
            0
        } else {
            let fraction = if replicas == 0 {
                -s.replicas
            } else {
                let annotated = s.max_replicas.unwrap_or(status_replicas);
                if annotated <= 0 {
                    0
                } else {
                    let size = (s.replicas as f64 * (replicas + max_surge) as f64 / annotated as f64).round() as i32;
                    size - s.replicas
                }
            };
            let allowed = to_add - added;
            if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
        };
        added += share;
        sizes.push((s.name.clone(), s.replicas + share));
    }
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, replicas: i32, available: i32, minute: u32) -> Set {
        Set {
            name: name.into(),
            replicas,
            available,
            created: Some(format!("2026-01-01T00:{minute:02}:00Z").parse().expect("time")),
            max_replicas: None,
        }
    }

    #[test]
    fn surge_and_unavailability_resolve_as_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(None, None, 10), Ok((3, 2)), "25% rounds up for surge, down for unavailable");
        assert_eq!(fenceposts(Some(&IntOrString::Int(0)), Some(&pct("0%")), 10), Ok((0, 1)));
        assert_eq!(fenceposts(Some(&pct("50%")), Some(&IntOrString::Int(0)), 3), Ok((2, 0)));
        assert!(fenceposts(Some(&pct("x")), None, 3).is_err());
    }

    #[test]
    fn the_new_set_grows_within_the_surge() {
        let new = set("new", 0, 0, 5);
        let old = set("old", 10, 10, 0);
        assert_eq!(new_replicas(10, 3, &new, &[old.clone(), new.clone()]), 3);
        let grown = set("new", 3, 0, 5);
        assert_eq!(new_replicas(10, 3, &grown, &[old, grown.clone()]), 3, "at 13 pods, no more");
        assert_eq!(new_replicas(10, 3, &set("new", 12, 0, 5), &[]), 10, "never above the size");
    }

    #[test]
    fn old_sets_shrink_unhealthy_first_and_keep_the_minimum_available() {
        // 10 replicas, maxUnavailable 2: new has 3 (none available yet), old has 10 available.
        let new = set("new", 3, 0, 5);
        let changes = scale_down_old(10, 2, Some(&new), &[set("old", 10, 10, 0)]);
        assert_eq!(changes, vec![("old".to_string(), 8)]);
        // An old set with unavailable pods loses those first, then available ones to the minimum.
        let changes = scale_down_old(10, 2, Some(&set("new", 3, 3, 5)), &[set("old", 10, 6, 0)]);
        assert_eq!(changes, vec![("old".to_string(), 5)], "its 4 unhealthy, then 1 of 9 available (8 must stay)");
        // Oldest first.
        let changes = scale_down_old(4, 1, Some(&set("new", 2, 2, 9)), &[set("b", 2, 2, 2), set("a", 2, 2, 1)]);
        assert_eq!(changes, vec![("a".to_string(), 0), ("b".to_string(), 1)]);
    }

    #[test]
    fn a_resize_mid_rollout_is_spread_in_proportion() {
        // 10 -> 20 with maxSurge 3: sets of 8 (old) and 5 (new) were sized for 13.
        let mut old = set("old", 8, 8, 0);
        let mut new = set("new", 5, 0, 5);
        old.max_replicas = Some(13);
        new.max_replicas = Some(13);
        let sizes = proportional(20, 3, 13, &[old.clone(), new.clone()]);
        let total: i32 = sizes.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 23);
        assert_eq!(sizes, vec![("old".to_string(), 14), ("new".to_string(), 9)]);
        // Scaling to zero empties every set.
        let sizes = proportional(0, 0, 13, &[old, new]);
        assert!(sizes.iter().all(|(_, n)| *n == 0), "{sizes:?}");
    }
}
