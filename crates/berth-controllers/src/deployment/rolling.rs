//! Rolling-update planning (upstream `rolling.go`): how far the new ReplicaSet may grow and how
//! far the old ones may shrink while keeping within maxSurge and maxUnavailable.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::util::{self, Error};

/// The size the new ReplicaSet should be scaled to now, if it should change
/// (upstream `reconcileNewReplicaSet`).
pub fn new_rs_target(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> Result<Option<i32>, Error> {
    let desired = util::replicas(d);
    let current = util::rs_replicas(new_rs);
    if current == desired {
        return Ok(None);
    }
    if current > desired {
        return Ok(Some(desired));
    }
    let target = util::new_rs_new_replicas(d, all, new_rs)?;
    Ok((target != current).then_some(target))
}

/// Scale-downs of old ReplicaSets (index into `rss`, new size), in the order upstream's
/// `reconcileOldReplicaSets` performs them: first unhealthy replicas, then as many available ones
/// as maxUnavailable allows. Several steps on one ReplicaSet are merged into its final size.
pub fn old_rs_scale_downs(d: &Deployment, rss: &[ReplicaSet], old: &[usize], new: usize) -> Vec<(usize, i32)> {
    let mut sizes: HashMap<usize, i32> = old.iter().map(|&i| (i, util::rs_replicas(&rss[i]))).collect();
    let old_pods: i32 = sizes.values().sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let new_rs = &rss[new];
    let all_pods = old_pods + util::rs_replicas(new_rs);
    let min_available = util::replicas(d) - util::max_unavailable(d);
    let new_unavailable = util::rs_replicas(new_rs) - util::rs_available(new_rs);
    // Unavailable new pods count against the budget, so a broken new template never drains the
    // old pods (see upstream's worked example in rolling.go).
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut order = old.to_vec();
    order.sort_by(|&a, &b| util::by_creation(&rss[a], &rss[b]));
    let mut steps: Vec<usize> = Vec::new();

    // Old pods that are not available cost nothing to remove.
    let mut cleaned = 0;
    for &i in &order {
        if cleaned >= max_scaled_down {
            break;
        }
        let size = sizes[&i];
        let available = util::rs_available(&rss[i]);
        if size == 0 || size == available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(size - available);
        sizes.insert(i, size - down);
        steps.push(i);
        cleaned += down;
    }

    // Then available old pods, down to replicas - maxUnavailable available in total.
    let available_total: i32 =
        order.iter().map(|&i| util::rs_available(&rss[i])).sum::<i32>() + util::rs_available(new_rs);
    if available_total > min_available {
        let budget = available_total - min_available;
        let mut scaled = 0;
        for &i in &order {
            if scaled >= budget {
                break;
            }
            let size = sizes[&i];
            if size == 0 {
                continue;
            }
            let down = size.min(budget - scaled);
            sizes.insert(i, size - down);
            steps.push(i);
            scaled += down;
        }
    }

    let mut seen = std::collections::HashSet::new();
    steps
        .into_iter()
        .filter(|i| seen.insert(*i))
        .map(|i| (i, sizes[&i]))
        .filter(|&(i, size)| size != util::rs_replicas(&rss[i]))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::deployment::util::tests::{deployment, replica_set};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    /// A ReplicaSet in the simulated world: desired size, pods, and how many are available.
    struct SimRs {
        rs: ReplicaSet,
        pods: i32,
        available: i32,
    }

    /// Runs the rolling planner against a world where the ReplicaSet controller creates missing
    /// pods (unavailable at first), deletes surplus unavailable-first, and pods become available
    /// one step after creation. Returns the (total pods, available pods) seen after every change.
    fn simulate(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Vec<(i32, i32)> {
        let d = deployment(replicas, surge, unavailable, "new");
        let mut world = vec![SimRs {
            rs: replica_set("web-old", "old", replicas, replicas, 0),
            pods: replicas,
            available: replicas,
        }];
        let mut seen = vec![(replicas, replicas)];
        for _step in 0..200 {
            for w in &mut world {
                let s = w.rs.status.as_mut().unwrap();
                s.replicas = w.pods;
                s.available_replicas = Some(w.available);
            }
            let rss: Vec<ReplicaSet> = world.iter().map(|w| w.rs.clone()).collect();
            let new = match util::find_new_rs(&d, &rss) {
                Some(i) => i,
                None => {
                    let mut rs = replica_set("web-new", "new", 0, 0, 10);
                    let all: Vec<&ReplicaSet> = rss.iter().collect();
                    let n = util::new_rs_new_replicas(&d, &all, &rs).unwrap();
                    util::set_rs_replicas(&mut rs, n);
                    world.push(SimRs { rs, pods: 0, available: 0 });
                    continue;
                }
            };
            let all: Vec<&ReplicaSet> = rss.iter().collect();
            let old: Vec<usize> =
                util::find_old_rss(&d, &rss).into_iter().filter(|&i| util::rs_replicas(&rss[i]) > 0).collect();
            if let Some(target) = new_rs_target(&d, &all, &rss[new]).unwrap() {
                util::set_rs_replicas(&mut world[new].rs, target);
            } else {
                for (i, size) in old_rs_scale_downs(&d, &rss, &old, new) {
                    util::set_rs_replicas(&mut world[i].rs, size);
                }
            }
            // The ReplicaSet controller and the kubelet.
            for w in &mut world {
                let want = util::rs_replicas(&w.rs);
                if w.pods > want {
                    let surplus = w.pods - want;
                    let unavailable = w.pods - w.available;
                    w.available -= (surplus - unavailable.min(surplus)).max(0);
                    w.pods = want;
                }
            }
            seen.push((world.iter().map(|w| w.pods).sum(), world.iter().map(|w| w.available).sum()));
            for w in &mut world {
                let want = util::rs_replicas(&w.rs);
                w.available = w.pods;
                if w.pods < want {
                    w.pods = want;
                }
            }
            seen.push((world.iter().map(|w| w.pods).sum(), world.iter().map(|w| w.available).sum()));
            if world.len() == 2 && world[1].available == replicas && world[0].pods == 0 {
                return seen;
            }
        }
        panic!("rollout did not finish: {seen:?}");
    }

    #[test]
    fn surge_one_unavailable_zero_never_dips_below_desired() {
        let seen = simulate(3, IntOrString::Int(1), IntOrString::Int(0));
        for &(total, available) in &seen {
            assert!(total <= 4, "total {total} exceeded replicas + maxSurge in {seen:?}");
            assert!(available >= 3, "available {available} dropped below replicas in {seen:?}");
        }
    }

    #[test]
    fn quarter_surge_and_unavailable_stay_within_bounds() {
        let seen = simulate(10, IntOrString::String("25%".into()), IntOrString::String("25%".into()));
        for &(total, available) in &seen {
            assert!(total <= 13, "total {total} above 10 + 3 in {seen:?}");
            assert!(available >= 8, "available {available} below 10 - 2 in {seen:?}");
        }
    }

    #[test]
    fn zero_surge_replaces_old_pods_first() {
        let seen = simulate(4, IntOrString::Int(0), IntOrString::Int(1));
        for &(total, available) in &seen {
            assert!(total <= 4, "total {total} above 4 in {seen:?}");
            assert!(available >= 3, "available {available} below 3 in {seen:?}");
        }
    }

    #[test]
    fn broken_new_pods_do_not_drain_old_ones() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(1), "new");
        // New ReplicaSet grew to 2 but none of its pods ever become available.
        let rss = vec![replica_set("web-old", "old", 2, 2, 0), replica_set("web-new", "new", 2, 0, 10)];
        assert!(old_rs_scale_downs(&d, &rss, &[0], 1).is_empty());
    }

    #[test]
    fn unhealthy_old_pods_are_removed_first() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0), "new");
        // Old ReplicaSet: 3 pods, only 1 available; new: 1 pod, available.
        let rss = vec![replica_set("web-old", "old", 3, 1, 0), replica_set("web-new", "new", 1, 1, 10)];
        // Budget: all 4 - min 3 - new unavailable 0 = 1, spent on an unhealthy pod.
        assert_eq!(old_rs_scale_downs(&d, &rss, &[0], 1), vec![(0, 2)]);
    }
}
