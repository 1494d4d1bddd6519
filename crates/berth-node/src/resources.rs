//! Reading the CPU and memory amounts of a pod spec, and what kubelet derives from them
//! (QoS class, `oom_score_adj`, CFS shares and quota).

use std::collections::BTreeMap;

use berth_core::validation::parse_quantity;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU in millicores (`500m` -> 500, `2` -> 2000).
pub fn millis(quantity: &Quantity) -> Option<i64> {
    parse_quantity(&quantity.0).ok().and_then(|q| i64::try_from(q.milli_value()).ok())
}

/// Whole units (`64Mi` -> 67108864 bytes).
pub fn units(quantity: &Quantity) -> Option<i64> {
    parse_quantity(&quantity.0).ok().and_then(|q| i64::try_from(q.value()).ok())
}

/// CPU and memory a container asks for and is capped at. Requests default to limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerResources {
    pub cpu_request_millis: Option<i64>,
    pub cpu_limit_millis: Option<i64>,
    pub memory_request_bytes: Option<i64>,
    pub memory_limit_bytes: Option<i64>,
}

impl ContainerResources {
    pub fn of(container: &Container) -> ContainerResources {
        Self::from_requirements(container.resources.as_ref())
    }

    pub fn from_requirements(requirements: Option<&ResourceRequirements>) -> ContainerResources {
        let get = |map: Option<&BTreeMap<String, Quantity>>, key: &str, convert: fn(&Quantity) -> Option<i64>| {
            map.and_then(|m| m.get(key)).and_then(convert)
        };
        let limits = requirements.and_then(|r| r.limits.as_ref());
        let requests = requirements.and_then(|r| r.requests.as_ref());
        let cpu_limit_millis = get(limits, "cpu", millis);
        let memory_limit_bytes = get(limits, "memory", units);
        ContainerResources {
            cpu_request_millis: get(requests, "cpu", millis).or(cpu_limit_millis),
            cpu_limit_millis,
            memory_request_bytes: get(requests, "memory", units).or(memory_limit_bytes),
            memory_limit_bytes,
        }
    }
}

/// What a pod needs from the node to be admitted: the larger of the sum of its containers'
/// requests and its largest init container request, for CPU and memory (upstream's rule).
pub fn pod_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else { return (0, 0) };
    let sum = spec.containers.iter().map(ContainerResources::of).fold((0, 0), |(cpu, mem), r| {
        (cpu + r.cpu_request_millis.unwrap_or(0), mem + r.memory_request_bytes.unwrap_or(0))
    });
    let init = spec.init_containers.iter().flatten().map(ContainerResources::of).fold((0, 0), |(cpu, mem), r| {
        (cpu.max(r.cpu_request_millis.unwrap_or(0)), mem.max(r.memory_request_bytes.unwrap_or(0)))
    });
    (sum.0.max(init.0), sum.1.max(init.1))
}

/// The pod's QoS class, as upstream computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else { return QosClass::BestEffort };
    let all: Vec<ContainerResources> =
        spec.containers.iter().chain(spec.init_containers.iter().flatten()).map(ContainerResources::of).collect();
    let any_set = all.iter().any(|r| {
        r.cpu_request_millis.is_some_and(|v| v > 0)
            || r.memory_request_bytes.is_some_and(|v| v > 0)
            || r.cpu_limit_millis.is_some()
            || r.memory_limit_bytes.is_some()
    });
    if !any_set {
        return QosClass::BestEffort;
    }
    let guaranteed = all.iter().all(|r| {
        r.cpu_limit_millis.is_some()
            && r.memory_limit_bytes.is_some()
            && r.cpu_request_millis == r.cpu_limit_millis
            && r.memory_request_bytes == r.memory_limit_bytes
    });
    if guaranteed { QosClass::Guaranteed } else { QosClass::Burstable }
}

/// `oom_score_adj` for a container, as kubelet's QoS policy sets it.
pub fn oom_score_adj(qos: QosClass, container: &ContainerResources, node_memory_bytes: i64) -> i32 {
    const GUARANTEED: i64 = -997;
    const BEST_EFFORT: i64 = 1000;
    match qos {
        QosClass::Guaranteed => GUARANTEED as i32,
        QosClass::BestEffort => BEST_EFFORT as i32,
        QosClass::Burstable => {
            let request = container.memory_request_bytes.unwrap_or(0);
            let capacity = node_memory_bytes.max(1);
            let score = 1000 - (1000 * i128::from(request) / i128::from(capacity)) as i64;
            // Burstable stays above Guaranteed and below BestEffort.
            score.clamp(1000 + GUARANTEED, BEST_EFFORT - 1) as i32
        }
    }
}

/// cpu.shares for a CPU request (kubelet's `MilliCPUToShares`).
pub fn cpu_shares(request_millis: Option<i64>) -> u64 {
    const MIN_SHARES: i64 = 2;
    let shares = request_millis.unwrap_or(0) * 1024 / 1000;
    shares.max(MIN_SHARES) as u64
}

/// CFS period used with quotas.
pub const CPU_PERIOD_US: u64 = 100_000;

/// CFS quota for a CPU limit (kubelet's `MilliCPUToQuota`, at least 1 ms).
pub fn cpu_quota(limit_millis: i64) -> i64 {
    (limit_millis * CPU_PERIOD_US as i64 / 1000).max(1000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn quantities_round_up_like_upstream() {
        assert_eq!(millis(&q("500m")), Some(500));
        assert_eq!(millis(&q("2")), Some(2000));
        assert_eq!(millis(&q("0.25")), Some(250));
        assert_eq!(millis(&q("100u")), Some(1));
        assert_eq!(units(&q("64Mi")), Some(64 * 1024 * 1024));
        assert_eq!(units(&q("1G")), Some(1_000_000_000));
        assert_eq!(units(&q("1.5Gi")), Some(1536 * 1024 * 1024));
        assert_eq!(units(&q("129e6")), Some(129_000_000));
        assert_eq!(units(&q("100m")), Some(1));
        assert_eq!(units(&q("12x")), None);
        assert_eq!(units(&q("")), None);
    }

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| pairs.iter().map(|(k, v)| ((*k).to_owned(), q(v))).collect())
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec { containers, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn qos_and_oom_scores() {
        let guaranteed = pod(vec![container(&[("cpu", "1"), ("memory", "1Gi")], &[])]);
        assert_eq!(qos_class(&guaranteed), QosClass::Guaranteed);
        let burstable = pod(vec![container(&[("memory", "1Gi")], &[("memory", "256Mi")])]);
        assert_eq!(qos_class(&burstable), QosClass::Burstable);
        let best_effort = pod(vec![container(&[], &[])]);
        assert_eq!(qos_class(&best_effort), QosClass::BestEffort);

        let resources = ContainerResources::of(&burstable.spec.as_ref().unwrap().containers[0]);
        assert_eq!(oom_score_adj(QosClass::Burstable, &resources, 4 << 30), 1000 - 62);
        assert_eq!(oom_score_adj(QosClass::Guaranteed, &resources, 4 << 30), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, &resources, 4 << 30), 1000);
        assert_eq!(pod_requests(&burstable), (0, 256 * 1024 * 1024));
        assert_eq!(pod_requests(&guaranteed), (1000, 1 << 30));
    }

    #[test]
    fn cpu_translation() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(500)), 512);
        assert_eq!(cpu_quota(250), 25_000);
        assert_eq!(cpu_quota(1), 1000);
    }
}
