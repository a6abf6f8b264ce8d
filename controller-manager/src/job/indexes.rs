//! Completion indexes of Indexed Jobs: the index a pod carries (annotation, else label
//! `batch.kubernetes.io/job-completion-index`), and sets of indexes kept as sorted, disjoint
//! intervals and written as upstream's status strings (`completedIndexes`, `failedIndexes`):
//! increasing decimals separated by commas, three or more consecutive numbers as `first-last`
//! (`1,3-5,7`; two in a row stay `1,2`).
//!
//! Parsing is lenient as upstream's: entries that are not numbers, or at or above
//! `completions`, are dropped, so a hand-edited status cannot wedge the controller.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// The annotation (and label) holding a pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The completion index of `pod`, if it carries a valid one.
pub fn index_of(pod: &Pod) -> Option<i32> {
    let m = &pod.metadata;
    let raw = m
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))?;
    raw.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// A set of indexes as sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(i32, i32)>);

impl Intervals {
    /// Reads a status string, keeping only indexes below `completions`.
    pub fn parse(s: &str, completions: i32) -> Intervals {
        let mut out = Intervals::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<i32>(), b.trim().parse::<i32>()),
                None => (part.parse::<i32>(), part.parse::<i32>()),
            };
            let (Ok(first), Ok(last)) = (first, last) else { continue };
            let last = last.min(completions - 1);
            if first < 0 || first > last {
                continue;
            }
            out.insert_range(first, last);
        }
        out
    }

    pub fn contains(&self, i: i32) -> bool {
        self.0
            .binary_search_by(|&(a, b)| {
                if b < i {
                    std::cmp::Ordering::Less
                } else if a > i {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    pub fn insert(&mut self, i: i32) {
        self.insert_range(i, i);
    }

    fn insert_range(&mut self, first: i32, last: i32) {
        self.0.push((first, last));
        self.0.sort_unstable();
        let mut merged: Vec<(i32, i32)> = Vec::with_capacity(self.0.len());
        for &(a, b) in &self.0 {
            match merged.last_mut() {
                Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
                _ => merged.push((a, b)),
            }
        }
        self.0 = merged;
    }

    /// How many indexes the set holds.
    pub fn total(&self) -> i32 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many of `other`'s indexes this set also holds.
    pub fn overlap(&self, other: &Intervals) -> i32 {
        let mut n = 0;
        for &(a, b) in &self.0 {
            for &(c, d) in &other.0 {
                let (lo, hi) = (a.max(c), b.min(d));
                if lo <= hi {
                    n += hi - lo + 1;
                }
            }
        }
        n
    }

    /// Indexes in `0..completions` the set does not hold, lowest first.
    pub fn missing(&self, completions: i32) -> impl Iterator<Item = i32> + '_ {
        (0..completions).filter(move |i| !self.contains(*i))
    }
}

impl FromIterator<i32> for Intervals {
    fn from_iter<T: IntoIterator<Item = i32>>(iter: T) -> Self {
        let mut v: Vec<i32> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut out: Vec<(i32, i32)> = Vec::new();
        for i in v {
            match out.last_mut() {
                Some((_, end)) if i == *end + 1 => *end = i,
                _ => out.push((i, i)),
            }
        }
        Intervals(out)
    }
}

impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut put = |f: &mut fmt::Formatter<'_>, s: String| {
            let sep = if first { "" } else { "," };
            first = false;
            write!(f, "{sep}{s}")
        };
        for &(a, b) in &self.0 {
            match b - a {
                0 => put(f, a.to_string())?,
                1 => {
                    put(f, a.to_string())?;
                    put(f, b.to_string())?;
                }
                _ => put(f, format!("{a}-{b}"))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_or_more_consecutive_indexes_are_written_as_a_range() {
        let table: &[(&[i32], &str)] = &[
            (&[], ""),
            (&[0], "0"),
            (&[0, 1], "0,1"),
            (&[0, 1, 2], "0-2"),
            (&[0, 1, 2, 4], "0-2,4"),
            (&[1, 3, 4, 5, 7], "1,3-5,7"),
            (&[7, 5, 4, 3, 1, 4], "1,3-5,7"),
            (&[2, 3, 5, 6], "2,3,5,6"),
        ];
        for (indexes, want) in table {
            assert_eq!(indexes.iter().copied().collect::<Intervals>().to_string(), *want, "{indexes:?}");
        }
    }

    #[test]
    fn status_strings_parse_back_dropping_junk_and_indexes_past_completions() {
        let table = [
            ("0-2,4", 10, "0-2,4"),
            ("1,3-5,7", 6, "1,3-5"),
            ("0-9", 3, "0-2"),
            ("x,2,-1,5-3,3", 10, "2,3"),
            ("", 5, ""),
            ("0,1,2", 5, "0-2"),
        ];
        for (s, completions, want) in table {
            assert_eq!(Intervals::parse(s, completions).to_string(), want, "{s:?} with {completions}");
        }
    }

    #[test]
    fn sets_answer_membership_totals_overlaps_and_gaps() {
        let mut s = Intervals::parse("0-2,6", 10);
        assert!(s.contains(1) && s.contains(6) && !s.contains(3));
        s.insert(3);
        s.insert(5);
        assert_eq!(s.to_string(), "0-3,5,6");
        assert_eq!(s.total(), 6);
        assert_eq!(s.missing(8).collect::<Vec<_>>(), [4, 7]);
        assert_eq!(s.overlap(&Intervals::parse("2-5", 10)), 3);
    }

    #[test]
    fn the_index_comes_from_the_annotation_then_the_label() {
        let pod = |annotations: serde_json::Value, labels: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"annotations": annotations, "labels": labels}}))
                .expect("pod")
        };
        assert_eq!(index_of(&pod(serde_json::json!({COMPLETION_INDEX: "3"}), serde_json::json!({}))), Some(3));
        assert_eq!(index_of(&pod(serde_json::json!({}), serde_json::json!({COMPLETION_INDEX: "4"}))), Some(4));
        assert_eq!(index_of(&pod(serde_json::json!({COMPLETION_INDEX: "-1"}), serde_json::json!({}))), None);
        assert_eq!(index_of(&pod(serde_json::json!({COMPLETION_INDEX: "x"}), serde_json::json!({}))), None);
        assert_eq!(index_of(&pod(serde_json::json!({}), serde_json::json!({}))), None);
    }
}
