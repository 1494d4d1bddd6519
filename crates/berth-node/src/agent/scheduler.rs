//! Does a pod fit on this node? The checks the default scheduler (binding) and kubelet
//! (admission) make for a one-node cluster: CPU and memory requests against allocatable, the
//! pod count, and `nodeSelector`. Pure functions; the agent does the API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::node::Capacity;
use crate::resources;

/// What the pods already admitted on the node request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Usage {
    pub fn add(&mut self, pod: &Pod) {
        let (cpu, memory) = resources::pod_requests(pod);
        self.cpu_millis += cpu;
        self.memory_bytes += memory;
        self.pods += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    Cpu,
    Memory,
    Pods,
    Selector,
}

impl Unfit {
    /// The scheduler's wording.
    fn scheduler_text(self) -> &'static str {
        match self {
            Unfit::Cpu => "Insufficient cpu",
            Unfit::Memory => "Insufficient memory",
            Unfit::Pods => "Too many pods",
            Unfit::Selector => "node(s) didn't match Pod's node affinity/selector",
        }
    }
}

pub fn fits(pod: &Pod, used: &Usage, capacity: &Capacity, labels: &BTreeMap<String, String>) -> Result<(), Vec<Unfit>> {
    let (cpu, memory) = resources::pod_requests(pod);
    let mut unfit = Vec::new();
    if cpu > 0 && used.cpu_millis + cpu > capacity.cpu_millis {
        unfit.push(Unfit::Cpu);
    }
    if memory > 0 && used.memory_bytes + memory > capacity.memory_bytes {
        unfit.push(Unfit::Memory);
    }
    if used.pods + 1 > capacity.pods {
        unfit.push(Unfit::Pods);
    }
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    if selector.is_some_and(|wanted| wanted.iter().any(|(k, v)| labels.get(k) != Some(v))) {
        unfit.push(Unfit::Selector);
    }
    if unfit.is_empty() { Ok(()) } else { Err(unfit) }
}

/// `FailedScheduling` message for a one-node cluster.
pub fn unschedulable_message(reasons: &[Unfit]) -> String {
    let mut texts: Vec<&str> = reasons.iter().map(|r| r.scheduler_text()).collect();
    texts.sort_unstable();
    let parts: Vec<String> = texts.iter().map(|t| format!("1 {t}")).collect();
    format!("0/1 nodes are available: {}.", parts.join(", "))
}

/// Kubelet's admission verdict for a pod bound here directly (`spec.nodeName` set by its
/// author): `(reason, message)` when it must be rejected.
pub fn admission_rejection(pod: &Pod, used: &Usage, capacity: &Capacity) -> Option<(String, String)> {
    let (cpu, memory) = resources::pod_requests(pod);
    let check = |name: &str, requested: i64, used: i64, capacity: i64| {
        (requested > 0 && used + requested > capacity).then(|| {
            (
                format!("OutOf{name}"),
                format!(
                    "Pod was rejected: Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            )
        })
    };
    check("cpu", cpu, used.cpu_millis, capacity.cpu_millis)
        .or_else(|| check("memory", memory, used.memory_bytes, capacity.memory_bytes))
        .or_else(|| {
            (used.pods + 1 > capacity.pods).then(|| {
                (
                    "OutOfpods".to_owned(),
                    format!("Pod was rejected: Node didn't have enough resource: pods, capacity: {}", capacity.pods),
                )
            })
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(cpu: &str, memory: &str) -> Pod {
        let requests =
            BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into())), ("memory".to_owned(), Quantity(memory.into()))]);
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements { requests: Some(requests), ..Default::default() }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const CAPACITY: Capacity = Capacity { cpu_millis: 2000, memory_bytes: 1 << 30, pods: 3 };

    #[test]
    fn requests_are_checked_against_allocatable() {
        let labels = super::super::node::labels("n1");
        let mut used = Usage::default();
        assert_eq!(fits(&pod("1500m", "100Mi"), &used, &CAPACITY, &labels), Ok(()));
        used.add(&pod("1500m", "100Mi"));
        assert_eq!(used, Usage { cpu_millis: 1500, memory_bytes: 100 << 20, pods: 1 });
        let unfit = fits(&pod("1", "2Gi"), &used, &CAPACITY, &labels).unwrap_err();
        assert_eq!(unfit, vec![Unfit::Cpu, Unfit::Memory]);
        assert_eq!(
            unschedulable_message(&unfit),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );

        let (reason, message) = admission_rejection(&pod("1", "1Mi"), &used, &CAPACITY).unwrap();
        assert_eq!(reason, "OutOfcpu");
        assert_eq!(
            message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
        );
        assert_eq!(admission_rejection(&pod("100m", "1Mi"), &used, &CAPACITY), None);
    }

    #[test]
    fn node_selector_must_match() {
        let labels = super::super::node::labels("n1");
        let mut selected = pod("0", "0");
        selected.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]));
        assert_eq!(fits(&selected, &Usage::default(), &CAPACITY, &labels), Err(vec![Unfit::Selector]));
        selected.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("kubernetes.io/hostname".to_owned(), "n1".to_owned())]));
        assert_eq!(fits(&selected, &Usage::default(), &CAPACITY, &labels), Ok(()));
    }
}
