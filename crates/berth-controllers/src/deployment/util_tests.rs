use super::*;
use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

pub(crate) fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

pub(crate) fn tmpl(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into_iter().collect()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container { name: "web".into(), image: Some(image.into()), ..Default::default() }],
            ..Default::default()
        }),
    }
}

pub(crate) fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into_iter().collect()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            template: tmpl(image),
            ..Default::default()
        }),
        status: None,
    }
}

/// A ReplicaSet of `d`'s family with the given template, size and available count.
pub(crate) fn replica_set(name: &str, image: &str, replicas: i32, available: i32, created: i64) -> ReplicaSet {
    let mut template = tmpl(image);
    let hash = compute_hash(&template, None);
    template.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(POD_TEMPLATE_HASH.into(), hash);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(ts(created))),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec { replicas: Some(replicas), template: Some(template), ..Default::default() }),
        status: Some(ReplicaSetStatus {
            replicas,
            available_replicas: Some(available),
            ready_replicas: Some(available),
            ..Default::default()
        }),
    }
}

fn int(i: i32) -> IntOrString {
    IntOrString::Int(i)
}

fn pct(s: &str) -> IntOrString {
    IntOrString::String(s.into())
}

#[test]
fn fenceposts_round_surge_up_and_unavailable_down() {
    assert_eq!(resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10), Ok((3, 2)));
    assert_eq!(resolve_fenceposts(Some(&pct("10%")), Some(&pct("10%")), 3), Ok((1, 0)));
    assert_eq!(resolve_fenceposts(Some(&int(1)), Some(&int(0)), 3), Ok((1, 0)));
    // Both zero after rounding: one unavailable is allowed.
    assert_eq!(resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5), Ok((0, 1)));
    // Unset fields take the API default of 25%.
    assert_eq!(resolve_fenceposts(None, None, 4), Ok((1, 1)));
    assert_eq!(scaled_value(&pct("abc"), 3, true), Err(Error::NotAPercentage("abc".into())));
}

#[test]
fn max_unavailable_is_capped_and_zero_for_recreate() {
    let d = deployment(2, int(0), int(5), "a");
    assert_eq!(max_unavailable(&d), 2);
    let mut recreate = d.clone();
    recreate.spec.as_mut().unwrap().strategy =
        Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    assert_eq!((max_unavailable(&recreate), max_surge(&recreate)), (0, 0));
}

#[test]
fn new_replica_set_gets_revision_change_cause_and_replica_annotations() {
    let mut d = deployment(3, int(1), int(0), "a");
    d.metadata.annotations = Some(
        [
            ("kubernetes.io/change-cause".to_string(), "kubectl set image".to_string()),
            (LAST_APPLIED.to_string(), "{}".to_string()),
            (REVISION.to_string(), "7".to_string()),
        ]
        .into_iter()
        .collect(),
    );
    let mut rs = replica_set("web-1", "a", 0, 0, 0);
    assert!(set_new_rs_annotations(&d, &mut rs, 2, false));
    let a = rs.metadata.annotations.as_ref().unwrap();
    assert_eq!(a.get(REVISION).map(String::as_str), Some("2"));
    assert_eq!(a.get("kubernetes.io/change-cause").map(String::as_str), Some("kubectl set image"));
    assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("3"));
    assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("4"));
    assert!(!a.contains_key(LAST_APPLIED));
    assert!(!a.contains_key(REVISION_HISTORY));
    // Nothing changes the second time.
    assert!(!set_new_rs_annotations(&d, &mut rs, 2, true));
}

#[test]
fn reused_replica_set_moves_to_the_next_revision_and_keeps_history() {
    let d = deployment(3, int(1), int(0), "a");
    let mut rs = replica_set("web-1", "a", 0, 0, 0);
    rs.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into_iter().collect());
    assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
    let a = rs.metadata.annotations.as_ref().unwrap();
    assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
    assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
    assert!(set_new_rs_annotations(&d, &mut rs, 5, true));
    assert_eq!(rs.metadata.annotations.as_ref().unwrap().get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
    // A lower revision never moves it back.
    assert!(!set_new_rs_annotations(&d, &mut rs, 4, true));
}

#[test]
fn new_replica_set_is_found_ignoring_the_hash_label() {
    let d = deployment(3, int(1), int(0), "b");
    let rss = vec![replica_set("web-a", "a", 3, 3, 0), replica_set("web-b", "b", 0, 0, 10)];
    assert_eq!(find_new_rs(&d, &rss), Some(1));
    assert_eq!(find_old_rss(&d, &rss), vec![0]);
    let d2 = deployment(3, int(1), int(0), "c");
    assert_eq!(find_new_rs(&d2, &rss), None);
    assert_eq!(find_old_rss(&d2, &rss), vec![0, 1]);
}

#[test]
fn new_replicas_respect_max_surge() {
    let d = deployment(3, int(1), int(0), "b");
    let old = replica_set("web-a", "a", 3, 3, 0);
    let new = replica_set("web-b", "b", 0, 0, 10);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(1));
    let new1 = replica_set("web-b", "b", 1, 0, 10);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new1], &new1), Ok(1));
    let old2 = replica_set("web-a", "a", 2, 2, 0);
    assert_eq!(new_rs_new_replicas(&d, &[&old2, &new1], &new1), Ok(2));
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    let mut d = deployment(20, int(0), int(1), "b");
    let mut old = replica_set("web-a", "a", 6, 6, 0);
    let mut new = replica_set("web-b", "b", 4, 4, 10);
    set_replicas_annotations(&mut old, 10, 10);
    set_replicas_annotations(&mut new, 10, 10);
    let rss = vec![old, new];
    let sizes = proportional_sizes(&d, &rss, &[0, 1]);
    assert_eq!(sizes, vec![(0, 12, "up"), (1, 8, "up")]);
    // Scaling down to 5 takes the most from the larger, older ReplicaSet.
    d.spec.as_mut().unwrap().replicas = Some(5);
    let sizes = proportional_sizes(&d, &rss, &[0, 1]);
    let total: i32 = sizes.iter().map(|s| s.1).sum();
    assert_eq!(total, 5);
    assert_eq!(sizes[0], (0, 3, "down"));
}

#[test]
fn active_or_latest_picks_the_single_active_one() {
    let rss = vec![replica_set("a", "a", 0, 0, 0), replica_set("b", "b", 3, 3, 5), replica_set("c", "c", 0, 0, 9)];
    assert_eq!(find_active_or_latest(&rss, Some(2), &[0, 1]), Some(1));
    let idle = vec![replica_set("a", "a", 0, 0, 0), replica_set("b", "b", 0, 0, 5)];
    assert_eq!(find_active_or_latest(&idle, None, &[0, 1]), Some(1));
    let busy = vec![replica_set("a", "a", 1, 1, 0), replica_set("b", "b", 2, 0, 5)];
    assert_eq!(find_active_or_latest(&busy, Some(1), &[0]), None);
}

#[test]
fn hash_is_stable_safe_and_collision_aware() {
    let t = tmpl("nginx:1");
    let h = compute_hash(&t, None);
    assert_eq!(h, compute_hash(&t, None));
    assert_ne!(h, compute_hash(&tmpl("nginx:2"), None));
    assert_ne!(h, compute_hash(&t, Some(1)));
    assert!(h.bytes().all(|b| SAFE_ALPHANUMS.contains(&b)));
    assert_eq!(safe_encode("0123456789"), "456789bcdf");
}

#[test]
fn status_counts_and_availability() {
    let d = deployment(3, int(1), int(0), "b");
    let old = replica_set("web-a", "a", 2, 2, 0);
    let new = replica_set("web-b", "b", 2, 1, 10);
    let s = calculate_status(&[&old, &new], Some(&new), &d, ts(0));
    assert_eq!(s.replicas, Some(4));
    assert_eq!(s.updated_replicas, Some(2));
    assert_eq!(s.available_replicas, Some(3));
    assert_eq!(s.unavailable_replicas, Some(1));
    assert_eq!(s.observed_generation, Some(1));
    let avail = get_condition(Some(&s), reason::AVAILABLE).unwrap();
    assert_eq!((avail.status.as_str(), avail.reason.as_deref()), ("True", Some(reason::MIN_AVAILABLE)));
    let short = replica_set("web-b", "b", 3, 1, 10);
    let s = calculate_status(&[&short], Some(&short), &d, ts(0));
    let avail = get_condition(Some(&s), reason::AVAILABLE).unwrap();
    assert_eq!((avail.status.as_str(), avail.reason.as_deref()), ("False", Some(reason::MIN_UNAVAILABLE)));
}

#[test]
fn progressing_condition_follows_the_rollout() {
    let mut d = deployment(3, int(1), int(0), "b");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
    let mut status = DeploymentStatus::default();
    set_condition(
        &mut status,
        new_condition(reason::PROGRESSING, "True", reason::NEW_REPLICA_SET, "Created".into(), ts(0)),
    );
    d.status = Some(status);
    let old = replica_set("web-a", "a", 3, 3, 0);
    let new = replica_set("web-b", "b", 1, 0, 10);
    // The new ReplicaSet has a pod: progress, and the deadline restarts from now.
    let s = rollout_status(&[&old, &new], Some(&new), &d, ts(10));
    let c = get_condition(Some(&s), reason::PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(reason::REPLICA_SET_UPDATED));
    assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-b\" is progressing."));
    assert_eq!(c.last_update_time, Some(Time(ts(10))));
    assert_eq!(c.last_transition_time, Some(Time(ts(0))));
    d.status = Some(s);
    // No change for longer than the deadline: timed out.
    assert_eq!(progress_check_after(&d, d.status.as_ref().unwrap(), ts(30)), Some(std::time::Duration::from_secs(41)));
    let s = rollout_status(&[&old, &new], Some(&new), &d, ts(71));
    let c = get_condition(Some(&s), reason::PROGRESSING).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(reason::TIMED_OUT)));
    assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-b\" has timed out progressing."));
    // All pods updated and available: complete.
    let done = replica_set("web-b", "b", 3, 3, 10);
    let s = rollout_status(&[&done], Some(&done), &d, ts(80));
    let c = get_condition(Some(&s), reason::PROGRESSING).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some(reason::NEW_RS_AVAILABLE)));
}

#[test]
fn replica_failure_is_copied_from_the_replica_sets() {
    let d = deployment(3, int(1), int(0), "b");
    let mut new = replica_set("web-b", "b", 3, 0, 10);
    new.status.as_mut().unwrap().conditions = Some(vec![ReplicaSetCondition {
        type_: reason::REPLICA_FAILURE.into(),
        status: "True".into(),
        reason: Some("FailedCreate".into()),
        message: Some("exceeded quota".into()),
        last_transition_time: Some(Time(ts(0))),
    }]);
    let s = rollout_status(&[&new], Some(&new), &d, ts(1));
    let c = get_condition(Some(&s), reason::REPLICA_FAILURE).unwrap();
    assert_eq!((c.reason.as_deref(), c.message.as_deref()), (Some("FailedCreate"), Some("exceeded quota")));
    let healthy = replica_set("web-b", "b", 3, 0, 10);
    let mut d2 = d.clone();
    d2.status = Some(s);
    let s = rollout_status(&[&healthy], Some(&healthy), &d2, ts(2));
    assert!(get_condition(Some(&s), reason::REPLICA_FAILURE).is_none());
}

#[test]
fn deployment_revision_annotation() {
    let mut d = deployment(1, int(1), int(0), "a");
    assert!(set_deployment_revision(&mut d, "2"));
    assert!(!set_deployment_revision(&mut d, "2"));
    assert_eq!(max_revision(&[replica_set("a", "a", 0, 0, 0)]), 0);
}
