//! Why a replica fits nowhere, in Swarm's words (moby/swarmkit manager/scheduler): every node is
//! counted under the first check it fails (alive, then the constraints, then the maximum per
//! node), and the reasons are listed from the most nodes to the fewest, e.g. `no suitable node
//! (scheduling constraints not satisfied on 2 nodes; max replicas per node limit exceed)`.

use serde::{Deserialize, Serialize};

/// How many nodes failed each check for a pending replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoSuitableNode {
    /// Nodes whose lease is gone.
    pub unavailable: usize,
    /// Live nodes the constraints exclude.
    pub constraints: usize,
    /// Matching nodes that already run the service's maximum.
    pub max_replicas: usize,
}

impl std::fmt::Display for NoSuitableNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = |n: usize| {
            if n == 1 {
                "1 node".to_string()
            } else {
                format!("{n} nodes")
            }
        };
        let mut parts = [
            (
                self.unavailable,
                format!("{} not available for new tasks", nodes(self.unavailable)),
            ),
            (
                self.constraints,
                format!(
                    "scheduling constraints not satisfied on {}",
                    nodes(self.constraints)
                ),
            ),
            (
                self.max_replicas,
                "max replicas per node limit exceed".to_string(),
            ),
        ];
        // Most nodes first; a stable sort keeps Swarm's check order between equal counts.
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        let reasons: Vec<&str> = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(_, text)| text.as_str())
            .collect();
        if reasons.is_empty() {
            f.write_str("no suitable node")
        } else {
            write!(f, "no suitable node ({})", reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_it_as_swarm_does() {
        let only_max = NoSuitableNode {
            max_replicas: 3,
            ..Default::default()
        };
        assert_eq!(
            only_max.to_string(),
            "no suitable node (max replicas per node limit exceed)"
        );
        let mixed = NoSuitableNode {
            unavailable: 1,
            constraints: 2,
            max_replicas: 1,
        };
        assert_eq!(
            mixed.to_string(),
            "no suitable node (scheduling constraints not satisfied on 2 nodes; \
             1 node not available for new tasks; max replicas per node limit exceed)"
        );
        assert_eq!(NoSuitableNode::default().to_string(), "no suitable node");
    }
}
