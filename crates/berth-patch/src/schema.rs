//! Patch metadata of the built-in kinds Berth serves, as a small type graph.
//!
//! Only the fields that carry a patch strategy, and the fields leading to them, are listed:
//! a field that is not listed behaves exactly like a field without a strategy (objects merge
//! recursively, lists are replaced), so the graph stays small. Strategies and merge keys are
//! the `patchStrategy` / `patchMergeKey` struct tags of `k8s.io/api` v0.32.

/// How a field is combined with the value already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// No tag: objects merge recursively, lists are replaced.
    Default,
    /// `patchStrategy:"merge"`: lists are merged (by the merge key for lists of objects).
    Merge,
    /// `patchStrategy:"replace"`: the value is replaced wholesale.
    Replace,
}

/// An API type: its name (for diagnostics) and the fields that matter for patching.
#[derive(Debug)]
pub struct TypeDef {
    pub name: &'static str,
    pub fields: &'static [FieldDef],
}

/// Patch metadata of one field of a [`TypeDef`].
#[derive(Debug)]
pub struct FieldDef {
    /// JSON name of the field.
    pub name: &'static str,
    pub strategy: Strategy,
    /// Whether the tag also carries `retainKeys`.
    pub retain_keys: bool,
    /// `patchMergeKey`, for lists of objects merged by key.
    pub merge_key: Option<&'static str>,
    /// Type of the value (object fields) or of the elements (list fields); `None` when the
    /// value has no patch metadata of its own.
    pub ty: Option<&'static TypeDef>,
}

impl TypeDef {
    /// The metadata of field `name`, if it has any.
    pub fn field(&'static self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|field| field.name == name)
    }
}

impl FieldDef {
    /// The strategy as spelled in the struct tag and in `x-kubernetes-patch-strategy`
    /// (`merge`, `merge,retainKeys`, `retainKeys`, `replace`), or `None` without a tag.
    pub fn patch_strategy(&self) -> Option<&'static str> {
        match (self.strategy, self.retain_keys) {
            (Strategy::Default, false) => None,
            (Strategy::Default, true) => Some("retainKeys"),
            (Strategy::Merge, false) => Some("merge"),
            (Strategy::Merge, true) => Some("merge,retainKeys"),
            (Strategy::Replace, false) => Some("replace"),
            (Strategy::Replace, true) => Some("replace,retainKeys"),
        }
    }
}

/// A field without a strategy whose value has patch metadata further down.
const fn nested(name: &'static str, ty: &'static TypeDef) -> FieldDef {
    FieldDef { name, strategy: Strategy::Default, retain_keys: false, merge_key: None, ty: Some(ty) }
}

/// A list of objects merged by `key`.
const fn merge_by(name: &'static str, key: &'static str, ty: Option<&'static TypeDef>) -> FieldDef {
    FieldDef { name, strategy: Strategy::Merge, retain_keys: false, merge_key: Some(key), ty }
}

/// A list of objects merged by `key` whose elements also honour `$retainKeys`.
const fn merge_retain_by(name: &'static str, key: &'static str) -> FieldDef {
    FieldDef { name, strategy: Strategy::Merge, retain_keys: true, merge_key: Some(key), ty: None }
}

/// A list of primitive values merged as a set.
const fn merge_set(name: &'static str) -> FieldDef {
    FieldDef { name, strategy: Strategy::Merge, retain_keys: false, merge_key: None, ty: None }
}

/// An object whose unlisted keys are cleared by `$retainKeys`.
const fn retain(name: &'static str) -> FieldDef {
    FieldDef { name, strategy: Strategy::Default, retain_keys: true, merge_key: None, ty: None }
}

const fn conditions() -> FieldDef {
    merge_by("conditions", "type", None)
}

// meta/v1

static OBJECT_META: TypeDef =
    TypeDef { name: "ObjectMeta", fields: &[merge_by("ownerReferences", "uid", None), merge_set("finalizers")] };

/// Kinds whose only patch metadata is in `metadata`.
static PLAIN_OBJECT: TypeDef = TypeDef { name: "Object", fields: &[nested("metadata", &OBJECT_META)] };

// core/v1

static CONTAINER: TypeDef = TypeDef {
    name: "Container",
    fields: &[
        merge_by("ports", "containerPort", None),
        merge_by("env", "name", None),
        merge_by("volumeMounts", "mountPath", None),
        merge_by("volumeDevices", "devicePath", None),
    ],
};

static POD_SPEC: TypeDef = TypeDef {
    name: "PodSpec",
    fields: &[
        merge_retain_by("volumes", "name"),
        merge_by("initContainers", "name", Some(&CONTAINER)),
        merge_by("containers", "name", Some(&CONTAINER)),
        // EphemeralContainerCommon carries the same tags as Container.
        merge_by("ephemeralContainers", "name", Some(&CONTAINER)),
        merge_by("imagePullSecrets", "name", None),
        merge_by("hostAliases", "ip", None),
        merge_by("topologySpreadConstraints", "topologyKey", None),
        merge_by("schedulingGates", "name", None),
        merge_retain_by("resourceClaims", "name"),
    ],
};

static POD_STATUS: TypeDef = TypeDef {
    name: "PodStatus",
    fields: &[
        conditions(),
        merge_by("podIPs", "ip", None),
        merge_by("hostIPs", "ip", None),
        merge_retain_by("resourceClaimStatuses", "name"),
    ],
};

static POD: TypeDef = TypeDef {
    name: "Pod",
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &POD_SPEC), nested("status", &POD_STATUS)],
};

static POD_TEMPLATE_SPEC: TypeDef =
    TypeDef { name: "PodTemplateSpec", fields: &[nested("metadata", &OBJECT_META), nested("spec", &POD_SPEC)] };

static SERVICE_SPEC: TypeDef = TypeDef { name: "ServiceSpec", fields: &[merge_by("ports", "port", None)] };

/// Status types whose only patch metadata is `conditions` merged by `type`.
static CONDITIONS_STATUS: TypeDef = TypeDef { name: "ConditionsStatus", fields: &[conditions()] };

static SERVICE: TypeDef = TypeDef {
    name: "Service",
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &SERVICE_SPEC), nested("status", &CONDITIONS_STATUS)],
};

static SERVICE_ACCOUNT: TypeDef =
    TypeDef { name: "ServiceAccount", fields: &[nested("metadata", &OBJECT_META), merge_by("secrets", "name", None)] };

static NAMESPACE: TypeDef =
    TypeDef { name: "Namespace", fields: &[nested("metadata", &OBJECT_META), nested("status", &CONDITIONS_STATUS)] };

static NODE_SPEC: TypeDef = TypeDef { name: "NodeSpec", fields: &[merge_set("podCIDRs")] };

static NODE_STATUS: TypeDef =
    TypeDef { name: "NodeStatus", fields: &[conditions(), merge_by("addresses", "type", None)] };

static NODE: TypeDef = TypeDef {
    name: "Node",
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &NODE_SPEC), nested("status", &NODE_STATUS)],
};

static PERSISTENT_VOLUME_CLAIM: TypeDef = TypeDef {
    name: "PersistentVolumeClaim",
    fields: &[nested("metadata", &OBJECT_META), nested("status", &CONDITIONS_STATUS)],
};

// apps/v1

static DEPLOYMENT_SPEC: TypeDef =
    TypeDef { name: "DeploymentSpec", fields: &[nested("template", &POD_TEMPLATE_SPEC), retain("strategy")] };

static DEPLOYMENT: TypeDef = TypeDef {
    name: "Deployment",
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &DEPLOYMENT_SPEC), nested("status", &CONDITIONS_STATUS)],
};

/// ReplicaSetSpec, StatefulSetSpec, DaemonSetSpec and JobSpec: only `template` matters.
static TEMPLATED_SPEC: TypeDef = TypeDef { name: "TemplatedSpec", fields: &[nested("template", &POD_TEMPLATE_SPEC)] };

/// ReplicaSet, StatefulSet, DaemonSet and Job: pod template in the spec, conditions in the status.
static TEMPLATED_WORKLOAD: TypeDef = TypeDef {
    name: "TemplatedWorkload",
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &TEMPLATED_SPEC), nested("status", &CONDITIONS_STATUS)],
};

// batch/v1

static JOB_TEMPLATE_SPEC: TypeDef =
    TypeDef { name: "JobTemplateSpec", fields: &[nested("metadata", &OBJECT_META), nested("spec", &TEMPLATED_SPEC)] };

static CRON_JOB_SPEC: TypeDef = TypeDef { name: "CronJobSpec", fields: &[nested("jobTemplate", &JOB_TEMPLATE_SPEC)] };

static CRON_JOB: TypeDef =
    TypeDef { name: "CronJob", fields: &[nested("metadata", &OBJECT_META), nested("spec", &CRON_JOB_SPEC)] };

/// The root type of a built-in kind, or `None` for kinds without a table (custom resources).
pub fn root_type(api_version: &str, kind: &str) -> Option<&'static TypeDef> {
    let root = match (api_version, kind) {
        ("v1", "Pod") => &POD,
        ("v1", "Service") => &SERVICE,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "Node") => &NODE,
        ("v1", "PersistentVolumeClaim") => &PERSISTENT_VOLUME_CLAIM,
        (
            "v1",
            "Endpoints" | "ConfigMap" | "Secret" | "Event" | "ResourceQuota" | "LimitRange" | "PersistentVolume",
        ) => &PLAIN_OBJECT,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        ("apps/v1", "ReplicaSet" | "StatefulSet" | "DaemonSet") => &TEMPLATED_WORKLOAD,
        ("batch/v1", "Job") => &TEMPLATED_WORKLOAD,
        ("batch/v1", "CronJob") => &CRON_JOB,
        ("networking.k8s.io/v1", "Ingress" | "IngressClass" | "NetworkPolicy")
        | ("discovery.k8s.io/v1", "EndpointSlice")
        | ("coordination.k8s.io/v1", "Lease")
        | ("rbac.authorization.k8s.io/v1", "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding") => {
            &PLAIN_OBJECT
        }
        _ => return None,
    };
    Some(root)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Follows `path` (field names) from the root of a kind.
    fn lookup(api_version: &str, kind: &str, path: &[&str]) -> &'static FieldDef {
        let mut ty = root_type(api_version, kind).unwrap();
        let (last, parents) = path.split_last().unwrap();
        for name in parents {
            ty = ty.field(name).and_then(|field| field.ty).unwrap();
        }
        ty.field(last).unwrap()
    }

    #[test]
    fn pod_spec_is_shared_by_every_pod_template() {
        let paths: [(&str, &str, &[&str]); 7] = [
            ("v1", "Pod", &["spec", "containers"]),
            ("apps/v1", "Deployment", &["spec", "template", "spec", "containers"]),
            ("apps/v1", "ReplicaSet", &["spec", "template", "spec", "containers"]),
            ("apps/v1", "StatefulSet", &["spec", "template", "spec", "containers"]),
            ("apps/v1", "DaemonSet", &["spec", "template", "spec", "containers"]),
            ("batch/v1", "Job", &["spec", "template", "spec", "containers"]),
            ("batch/v1", "CronJob", &["spec", "jobTemplate", "spec", "template", "spec", "containers"]),
        ];
        for (api_version, kind, path) in paths {
            let field = lookup(api_version, kind, path);
            assert_eq!(field.merge_key, Some("name"), "{kind}");
            assert_eq!(field.strategy, Strategy::Merge, "{kind}");
            assert_eq!(field.ty.map(|ty| ty.name), Some("Container"), "{kind}");
        }
    }

    #[test]
    fn tags_match_the_api_types() {
        // api version, kind, path, expected tag, expected merge key
        type TagCase =
            (&'static str, &'static str, &'static [&'static str], Option<&'static str>, Option<&'static str>);
        let cases: [TagCase; 12] = [
            ("v1", "Pod", &["spec", "volumes"], Some("merge,retainKeys"), Some("name")),
            ("v1", "Pod", &["spec", "containers", "ports"], Some("merge"), Some("containerPort")),
            ("v1", "Pod", &["spec", "containers", "volumeMounts"], Some("merge"), Some("mountPath")),
            ("v1", "Pod", &["spec", "hostAliases"], Some("merge"), Some("ip")),
            ("v1", "Pod", &["status", "conditions"], Some("merge"), Some("type")),
            ("v1", "Pod", &["metadata", "ownerReferences"], Some("merge"), Some("uid")),
            ("v1", "ConfigMap", &["metadata", "finalizers"], Some("merge"), None),
            ("v1", "Service", &["spec", "ports"], Some("merge"), Some("port")),
            ("v1", "ServiceAccount", &["secrets"], Some("merge"), Some("name")),
            ("v1", "Node", &["spec", "podCIDRs"], Some("merge"), None),
            ("apps/v1", "Deployment", &["spec", "strategy"], Some("retainKeys"), None),
            ("batch/v1", "Job", &["status", "conditions"], Some("merge"), Some("type")),
        ];
        for (api_version, kind, path, strategy, key) in cases {
            let field = lookup(api_version, kind, path);
            assert_eq!(field.patch_strategy(), strategy, "{kind} {path:?}");
            assert_eq!(field.merge_key, key, "{kind} {path:?}");
        }
    }

    #[test]
    fn unknown_kinds_and_fields_have_no_metadata() {
        assert!(root_type("example.com/v1", "Widget").is_none());
        assert!(root_type("v1", "Deployment").is_none());
        assert!(POD_SPEC.field("tolerations").is_none());
    }
}
