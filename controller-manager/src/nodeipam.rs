//! Node IPAM (`--allocate-node-cidrs`): every node without `spec.podCIDR` gets the lowest free
//! block of `--node-cidr-mask-size` from `--cluster-cidr`. A block in use by any node (or handed
//! out and not yet seen) is never handed out again; a deleted node's block is free again.
//! One worker, so two nodes never race for a block.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use crate::informer::Informer;
use crate::workqueue::WorkQueue;

/// Blocks of a cluster CIDR, by index.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocks {
    base: u32,
    cluster_bits: u8,
    mask: u8,
}

impl Blocks {
    pub fn parse(cluster_cidr: &str, mask: u8) -> Result<Blocks, String> {
        let (ip, bits) =
            cluster_cidr.split_once('/').ok_or_else(|| format!("--cluster-cidr {cluster_cidr:?}: not a CIDR"))?;
        let ip: Ipv4Addr =
            ip.parse().map_err(|_| format!("--cluster-cidr {cluster_cidr:?}: only IPv4 is supported"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 32)
            .ok_or_else(|| format!("--cluster-cidr {cluster_cidr:?}: bad prefix"))?;
        if mask < bits || mask > 30 {
            return Err(format!("--node-cidr-mask-size {mask} must be between the cluster prefix /{bits} and /30"));
        }
        let base = u32::from(ip) & (u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0));
        Ok(Blocks { base, cluster_bits: bits, mask })
    }

    pub fn count(&self) -> u32 {
        1u32 << (self.mask - self.cluster_bits)
    }

    pub fn cidr(&self, index: u32) -> String {
        let ip = Ipv4Addr::from(self.base + (index << (32 - self.mask as u32)));
        format!("{ip}/{}", self.mask)
    }

    pub fn index(&self, cidr: &str) -> Option<u32> {
        let (ip, bits) = cidr.split_once('/')?;
        let ip: u32 = ip.parse::<Ipv4Addr>().ok()?.into();
        if bits.parse::<u8>().ok()? != self.mask || ip < self.base {
            return None;
        }
        let i = (ip - self.base) >> (32 - self.mask as u32);
        (i < self.count()).then_some(i)
    }

    /// The lowest block not in `used`.
    pub fn first_free(&self, used: &BTreeSet<u32>) -> Option<u32> {
        (0..self.count()).find(|i| !used.contains(i))
    }
}

pub struct NodeIpamController {
    client: kube::Client,
    nodes: Informer<Node>,
    blocks: Blocks,
    /// Node -> block handed out but perhaps not yet seen on the node.
    handed_out: Mutex<HashMap<String, u32>>,
    pub queue: Arc<WorkQueue>,
}

impl NodeIpamController {
    pub fn new(client: kube::Client, nodes: &Informer<Node>, blocks: Blocks) -> Arc<NodeIpamController> {
        let c = Arc::new(NodeIpamController {
            client,
            nodes: nodes.clone(),
            blocks,
            handed_out: Mutex::default(),
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<NodeIpamController> = Arc::downgrade(&c);
        nodes.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            match new {
                Some(n) if n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_none_or(str::is_empty) => {
                    c.queue.add(n.metadata.name.clone().unwrap_or_default());
                }
                Some(_) => {}
                None => {
                    if let Some(n) = old {
                        c.lock().remove(n.metadata.name.as_deref().unwrap_or_default());
                    }
                }
            }
        });
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.handed_out.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn sync(&self, name: &str) -> Result<Option<Duration>, kube::Error> {
        let Some(node) = self.nodes.get("", name) else { return Ok(None) };
        if node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_some_and(|c| !c.is_empty()) {
            return Ok(None);
        }
        let mut used: BTreeSet<u32> = self
            .nodes
            .list_all()
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref().and_then(|c| self.blocks.index(c)))
            .collect();
        let index = {
            let mut handed = self.lock();
            match handed.get(name) {
                Some(i) => *i,
                None => {
                    used.extend(handed.values().copied());
                    let Some(i) = self.blocks.first_free(&used) else {
                        tracing::warn!(node = %name, "No pod CIDR left to hand out");
                        return Ok(Some(Duration::from_secs(30)));
                    };
                    handed.insert(name.to_string(), i);
                    i
                }
            }
        };
        let cidr = self.blocks.cidr(index);
        let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        Api::<Node>::all(self.client.clone()).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(node = %name, %cidr, "Allocated the node's pod CIDR");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_lowest_first_and_never_twice() {
        let b = Blocks::parse("10.244.0.0/16", 24).expect("cidr");
        assert_eq!(b.count(), 256);
        assert_eq!(b.cidr(0), "10.244.0.0/24");
        assert_eq!(b.cidr(5), "10.244.5.0/24");
        assert_eq!(b.index("10.244.5.0/24"), Some(5));
        assert_eq!(b.index("10.245.0.0/24"), None, "outside the cluster CIDR");
        assert_eq!(b.index("10.244.5.0/25"), None);
        let used: BTreeSet<u32> = [0, 1, 3].into();
        assert_eq!(b.first_free(&used), Some(2));
        let full: BTreeSet<u32> = (0..256).collect();
        assert_eq!(b.first_free(&full), None);
        assert!(Blocks::parse("10.244.0.0/16", 8).is_err());
        assert!(Blocks::parse("fd00::/64", 80).is_err());
    }
}
