//! Server-side printing: `meta.k8s.io/v1` Table columns and rows with upstream's columns
//! (kubernetes `pkg/printers/internalversion/printers.go`).
//!
//! The API server always prints the wide form (priority 1 columns included); kubectl hides
//! priority 1 columns unless `-o wide` is asked for.

mod format;
mod rows;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::registry::GroupVersionKind;

/// One `TableColumnDefinition`.
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for default columns, 1 for `-o wide` only.
    pub priority: u8,
}

const NAME_DOC: &str = "Name must be unique within a namespace.";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created.";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 0 }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column { name, kind, format: "", description, priority: 1 }
}

const fn name_col() -> Column {
    Column { name: "Name", kind: "string", format: "name", description: NAME_DOC, priority: 0 }
}

const fn age_col() -> Column {
    col("Age", "string", AGE_DOC)
}

/// Which printer handles a kind; `Default` is upstream's `Name`/`Created At` table for kinds
/// without a printer, `Generic` is Berth's `Name`/`Age` fallback for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Endpoints,
    EndpointSlice,
    ConfigMap,
    Secret,
    ServiceAccount,
    Namespace,
    Node,
    Event,
    ResourceQuota,
    PersistentVolumeClaim,
    PersistentVolume,
    Ingress,
    IngressClass,
    NetworkPolicy,
    Lease,
    RoleBinding,
    ControllerRevision,
    Default,
    Generic,
}

fn printer(gvk: &GroupVersionKind) -> Printer {
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "Pod") => Printer::Pod,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("apps", "ControllerRevision") => Printer::ControllerRevision,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "Namespace") => Printer::Namespace,
        ("", "Node") => Printer::Node,
        ("", "Event") => Printer::Event,
        ("", "ResourceQuota") => Printer::ResourceQuota,
        ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
        ("", "PersistentVolume") => Printer::PersistentVolume,
        ("networking.k8s.io", "Ingress") => Printer::Ingress,
        ("networking.k8s.io", "IngressClass") => Printer::IngressClass,
        ("networking.k8s.io", "NetworkPolicy") => Printer::NetworkPolicy,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => Printer::RoleBinding,
        ("", "LimitRange")
        | ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
        | ("apiextensions.k8s.io", "CustomResourceDefinition") => Printer::Default,
        _ => Printer::Generic,
    }
}

/// The columns for `gvk` (falls back to Name and Age).
pub fn columns(gvk: &GroupVersionKind) -> Vec<Column> {
    match printer(gvk) {
        Printer::Pod => vec![
            name_col(),
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age_col(),
            wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster."),
            wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
            wide("Nominated Node", "string", "The node this pod is nominated to run on after preemption."),
            wide("Readiness Gates", "string", "Conditions that are evaluated for pod readiness."),
        ],
        Printer::Deployment => vec![
            name_col(),
            col("Ready", "string", "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "string",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "string",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age_col(),
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", "Label selector for pods."),
        ],
        Printer::ReplicaSet => vec![
            name_col(),
            col("Desired", "integer", "Replicas is the number of desired replicas."),
            col("Current", "integer", "Replicas is the most recently observed number of replicas."),
            col("Ready", "integer", "The number of ready replicas for this replica set."),
            age_col(),
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
        ],
        Printer::StatefulSet => vec![
            name_col(),
            col("Ready", "string", "Number of the pod with ready state"),
            age_col(),
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
        ],
        Printer::DaemonSet => vec![
            name_col(),
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
            col(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            col(
                "Ready",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            col(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            age_col(),
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
        ],
        Printer::Job => vec![
            name_col(),
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The number of pods which reached phase Succeeded."),
            col("Duration", "string", "Time required to complete the job."),
            age_col(),
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ],
        Printer::CronJob => vec![
            name_col(),
            col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            col("Timezone", "string", "The time zone name for the given schedule."),
            col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions."),
            col("Active", "integer", "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
            age_col(),
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ],
        Printer::Service => vec![
            name_col(),
            col("Type", "string", "type determines how the Service is exposed."),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service."),
            col(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col("Port(s)", "string", "The list of ports that are exposed by this service."),
            age_col(),
            wide(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Printer::Endpoints => vec![
            name_col(),
            col("Endpoints", "string", "The set of all endpoints is the union of all subsets."),
            age_col(),
        ],
        Printer::EndpointSlice => vec![
            name_col(),
            col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
            col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
            age_col(),
        ],
        Printer::ConfigMap => {
            vec![name_col(), col("Data", "string", "Data contains the configuration data."), age_col()]
        }
        Printer::Secret => vec![
            name_col(),
            col("Type", "string", "Used to facilitate programmatic handling of secret data."),
            col("Data", "string", "Data contains the secret data."),
            age_col(),
        ],
        Printer::ServiceAccount => vec![
            name_col(),
            col(
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            age_col(),
        ],
        Printer::Namespace => vec![name_col(), col("Status", "string", "The status of the namespace"), age_col()],
        Printer::Node => vec![
            name_col(),
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            age_col(),
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "List of addresses reachable to the node."),
            wide("External-IP", "string", "List of addresses reachable to the node."),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r'."),
            wide(
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node through runtime remote API.",
            ),
        ],
        Printer::Event => vec![
            col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
            col(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col("Object", "string", "The object that this event is about."),
            wide(
                "Subobject",
                "string",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            wide("Source", "string", "The component reporting this event."),
            col("Message", "string", "A human-readable description of the status of this operation."),
            wide("First Seen", "string", "The time at which the event was first recorded."),
            wide("Count", "string", "The number of times this event has occurred."),
            Column { name: "Name", kind: "string", format: "name", description: NAME_DOC, priority: 1 },
        ],
        Printer::ResourceQuota => vec![
            name_col(),
            col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
            col(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
            age_col(),
        ],
        Printer::PersistentVolumeClaim => vec![
            name_col(),
            col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
            col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
            col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
            col(
                "Access Modes",
                "string",
                "accessModes contains the actual access modes the volume backing the PVC has.",
            ),
            col("StorageClass", "string", "StorageClass of the pvc"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
            age_col(),
            wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
        ],
        Printer::PersistentVolume => vec![
            name_col(),
            col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
            col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
            col(
                "Reclaim Policy",
                "string",
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
            ),
            col(
                "Status",
                "string",
                "phase indicates if a volume is available, bound to a claim, or released by a claim.",
            ),
            col(
                "Claim",
                "string",
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            ),
            col("StorageClass", "string", "StorageClass of the pv"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
            col(
                "Reason",
                "string",
                "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
            ),
            age_col(),
            wide(
                "VolumeMode",
                "string",
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            ),
        ],
        Printer::Ingress => vec![
            name_col(),
            col(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for additional configuration",
            ),
            col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
            col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
            col("Ports", "string", "Ports of TLS configurations that open"),
            age_col(),
        ],
        Printer::IngressClass => vec![
            name_col(),
            col("Controller", "string", "Controller that is responsible for handling this class"),
            col("Parameters", "string", "A reference to a resource with additional parameters"),
            age_col(),
        ],
        Printer::NetworkPolicy => vec![
            name_col(),
            col("Pod-Selector", "string", "Selects the pods to which this NetworkPolicy object applies."),
            age_col(),
        ],
        Printer::Lease => vec![
            name_col(),
            col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."),
            age_col(),
        ],
        Printer::RoleBinding => vec![
            name_col(),
            col(
                "Role",
                "string",
                "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
            ),
            age_col(),
            wide("Users", "string", "Users in the roleBinding"),
            wide("Groups", "string", "Groups in the roleBinding"),
            wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
        ],
        Printer::ControllerRevision => vec![
            name_col(),
            col("Controller", "string", "Controller of the object"),
            col("Revision", "string", "Revision indicates the revision of the state represented by Data."),
            age_col(),
        ],
        Printer::Default => vec![name_col(), col("Created At", "date", AGE_DOC)],
        Printer::Generic => vec![name_col(), age_col()],
    }
}

/// The cells of one row for `obj`, in the order of [`columns`].
pub fn cells(gvk: &GroupVersionKind, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let p = rows::Printing { obj, now };
    match printer(gvk) {
        Printer::Pod => p.pod(),
        Printer::Deployment => p.deployment(),
        Printer::ReplicaSet => p.replica_set(),
        Printer::StatefulSet => p.stateful_set(),
        Printer::DaemonSet => p.daemon_set(),
        Printer::Job => p.job(),
        Printer::CronJob => p.cron_job(),
        Printer::Service => p.service(),
        Printer::Endpoints => p.endpoints(),
        Printer::EndpointSlice => p.endpoint_slice(),
        Printer::ConfigMap => p.config_map(),
        Printer::Secret => p.secret(),
        Printer::ServiceAccount => p.service_account(),
        Printer::Namespace => p.namespace(),
        Printer::Node => p.node(),
        Printer::Event => p.event(),
        Printer::ResourceQuota => p.resource_quota(),
        Printer::PersistentVolumeClaim => p.persistent_volume_claim(),
        Printer::PersistentVolume => p.persistent_volume(),
        Printer::Ingress => p.ingress(),
        Printer::IngressClass => p.ingress_class(),
        Printer::NetworkPolicy => p.network_policy(),
        Printer::Lease => p.lease(),
        Printer::RoleBinding => p.role_binding(),
        Printer::ControllerRevision => p.controller_revision(),
        Printer::Default => p.default_row(),
        Printer::Generic => p.generic_row(),
    }
}

/// Upstream's `HumanDuration` of the time since `timestamp`, or `<unknown>`.
pub fn age(timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match format::parse_time(timestamp) {
        Some(ts) => human_duration((now - ts).num_seconds()),
        None => "<unknown>".to_owned(),
    }
}

/// `HumanDuration` from apimachinery `util/duration`. Up to a second in the future is
/// tolerated as clock skew; further is `<invalid>`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".to_owned();
    }
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", secs % 60) }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 { format!("{y}y") } else { format!("{y}y{}d", d % 365) }
    } else {
        format!("{}y", d / 365)
    }
}
