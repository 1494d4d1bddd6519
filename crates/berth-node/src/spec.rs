//! From a Kubernetes container to what runc runs: the command line, the environment (with
//! `$(VAR)` expansion and references to ConfigMaps, Secrets and the pod's own fields), the
//! user, capabilities and resource limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, SecurityContext, Service, ServicePort};

use crate::resources::{self, ContainerResources};

/// API objects a pod refers to, fetched by the agent before the pod starts.
#[derive(Debug, Clone, Default)]
pub struct PodInputs {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// Host directory of each bound PersistentVolumeClaim the pod mounts, by claim name.
    pub claims: BTreeMap<String, std::path::PathBuf>,
    /// Services whose `<NAME>_SERVICE_HOST`-style variables the containers get: those of the
    /// pod's namespace (with `enableServiceLinks`) and `default/kubernetes`.
    pub services: Vec<Service>,
}

impl PodInputs {
    fn config_map_value(&self, name: &str, key: &str) -> Option<Result<String, ()>> {
        let map = self.config_maps.get(name)?;
        if let Some(value) = map.data.as_ref().and_then(|d| d.get(key)) {
            return Some(Ok(value.clone()));
        }
        map.binary_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|bytes| String::from_utf8(bytes.0.clone()).map_err(|_| ()))
            .or(Some(Err(())))
    }

    fn secret_value(&self, name: &str, key: &str) -> Option<Result<String, ()>> {
        let secret = self.secrets.get(name)?;
        if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Some(String::from_utf8(bytes.0.clone()).map_err(|_| ()));
        }
        secret.string_data.as_ref().and_then(|d| d.get(key)).map(|v| Ok(v.clone())).or(Some(Err(())))
    }
}

/// Why a container cannot be configured; shown as `CreateContainerConfigError` (or
/// `CreateContainerError` for [`SpecError::NoCommand`]) with this text, as kubelet words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound { namespace: String, name: String, key: String },
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound { namespace: String, name: String, key: String },
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported resource: {0}")]
    UnsupportedResource(String),
    #[error("container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {container})")]
    RunAsRoot { pod: String, container: String },
    #[error("no command specified")]
    NoCommand,
}

impl SpecError {
    /// The waiting reason kubelet reports for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::NoCommand => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

/// Where the pod runs, for `fieldRef`s and defaults.
#[derive(Debug, Clone)]
pub struct PodPlacement {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
}

/// Everything about one container runc needs, independent of the image and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub read_only_root: bool,
    pub oom_score_adj: i32,
    pub resources: ContainerResources,
}

/// Docker's (and containerd's) default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability this kernel generation knows, for `privileged` and `add: [ALL]`.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The `PATH` a `host` image process starts with (the image has no config of its own).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn normalize_capability(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") }
}

/// Applies `capabilities.add/drop` to the default set.
pub fn capabilities(security: Option<&SecurityContext>) -> Vec<String> {
    if security.and_then(|s| s.privileged).unwrap_or(false) {
        return ALL_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    }
    let mut set: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    let caps = security.and_then(|s| s.capabilities.as_ref());
    let drop: Vec<String> =
        caps.and_then(|c| c.drop.as_ref()).into_iter().flatten().map(|c| normalize_capability(c)).collect();
    let add: Vec<String> =
        caps.and_then(|c| c.add.as_ref()).into_iter().flatten().map(|c| normalize_capability(c)).collect();
    if drop.iter().any(|c| c == "CAP_ALL") {
        set.clear();
    } else {
        set.retain(|c| !drop.contains(c));
    }
    if add.iter().any(|c| c == "CAP_ALL") {
        return ALL_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    }
    for cap in add {
        if !set.contains(&cap) {
            set.push(cap);
        }
    }
    set
}

/// Upstream's `$(VAR)` expansion: `$$` is a literal `$`; an undefined `$(VAR)` stays as is.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(close) => {
                    let name = &body[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn field_ref(pod: &Pod, placement: &PodPlacement, path: &str) -> Result<String, SpecError> {
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(value) = keyed("metadata.labels['", pod.metadata.labels.as_ref()) {
        return Ok(value);
    }
    if let Some(value) = keyed("metadata.annotations['", pod.metadata.annotations.as_ref()) {
        return Ok(value);
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => pod_name(pod).to_owned(),
        "metadata.namespace" => pod_namespace(pod).to_owned(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| placement.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => placement.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => placement.host_ip.clone(),
        other => return Err(SpecError::UnsupportedFieldPath(other.to_owned())),
    })
}

/// A `resourceFieldRef` value for volumes, which have no placement: an unset limit reads as
/// the machine's CPUs or memory.
pub fn resource_field_value(
    container: &Container,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<String, SpecError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<i64>().ok())
    });
    let placement = PodPlacement {
        pod_ip: String::new(),
        host_ip: String::new(),
        node_name: String::new(),
        node_cpu_millis: cpus * 1000,
        node_memory_bytes: memory_kib.unwrap_or(0) * 1024,
    };
    resource_field_ref(container, &placement, resource, divisor)
}

fn resource_field_ref(
    container: &Container,
    placement: &PodPlacement,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<String, SpecError> {
    let own = ContainerResources::of(container);
    // An unset limit reads as the node's allocatable amount, as upstream does.
    let (value, is_cpu) = match resource {
        "limits.cpu" => (own.cpu_limit_millis.unwrap_or(placement.node_cpu_millis), true),
        "requests.cpu" => (own.cpu_request_millis.unwrap_or(0), true),
        "limits.memory" => (own.memory_limit_bytes.unwrap_or(placement.node_memory_bytes), false),
        "requests.memory" => (own.memory_request_bytes.unwrap_or(0), false),
        other => return Err(SpecError::UnsupportedResource(other.to_owned())),
    };
    let text = if is_cpu {
        let divisor = divisor.and_then(resources::millis).filter(|d| *d > 0).unwrap_or(1000);
        // CPU is rounded up to the divisor.
        (value + divisor - 1) / divisor
    } else {
        let divisor = divisor.and_then(resources::units).filter(|d| *d > 0).unwrap_or(1);
        (value + divisor - 1) / divisor
    };
    Ok(text.to_string())
}

/// The container's environment in order: `HOSTNAME` and `PATH` defaults, then `envFrom`, then
/// `env`, each `env` value expanded over what is defined before it.
pub fn environment(
    pod: &Pod,
    container: &Container,
    inputs: &PodInputs,
    placement: &PodPlacement,
    hostname: &str,
) -> Result<Vec<(String, String)>, SpecError> {
    let namespace = pod_namespace(pod);
    let mut env: Vec<(String, String)> =
        vec![("PATH".to_owned(), DEFAULT_PATH.to_owned()), ("HOSTNAME".to_owned(), hostname.to_owned())];
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(slot) = env.iter_mut().find(|(existing, _)| *existing == name) {
            slot.1 = value;
        } else {
            env.push((name, value));
        }
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            match inputs.config_maps.get(&reference.name) {
                Some(map) => {
                    for (key, value) in map.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), value.clone());
                    }
                }
                None if reference.optional.unwrap_or(false) => {}
                None => return Err(SpecError::ConfigMapNotFound(reference.name.clone())),
            }
        }
        if let Some(reference) = &source.secret_ref {
            match inputs.secrets.get(&reference.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), String::from_utf8_lossy(&value.0).into_owned());
                    }
                }
                None if reference.optional.unwrap_or(false) => {}
                None => return Err(SpecError::SecretNotFound(reference.name.clone())),
            }
        }
    }
    let services = service_env(&inputs.services);
    for var in container.env.iter().flatten() {
        if let Some(value) = env_var_value(pod, container, var, inputs, placement, namespace, &env, &services)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    // Service variables fill in what the container does not define itself, as kubelet does.
    for (name, value) in services {
        if !env.iter().any(|(existing, _)| *existing == name) {
            env.push((name, value));
        }
    }
    Ok(env)
}

/// Docker-links-style variables for services (`REDIS_MASTER_SERVICE_HOST`, `..._PORT`,
/// `REDIS_MASTER_PORT_6379_TCP_ADDR`, ...), services without a cluster IP left out.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    for service in sorted {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let prefix = service.metadata.name.as_deref().unwrap_or("").to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        let Some(first) = ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let name = name.to_uppercase().replace('-', "_");
                env.push((format!("{prefix}_SERVICE_PORT_{name}"), port.port.to_string()));
            }
        }
        let protocol = |p: &ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
        env.push((format!("{prefix}_PORT"), format!("{}://{ip}:{}", protocol(first).to_lowercase(), first.port)));
        for port in ports {
            let proto = protocol(port);
            let base = format!("{prefix}_PORT_{}_{}", port.port, proto.to_uppercase());
            env.push((base.clone(), format!("{}://{ip}:{}", proto.to_lowercase(), port.port)));
            env.push((format!("{base}_PROTO"), proto.to_lowercase()));
            env.push((format!("{base}_PORT"), port.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.to_owned()));
        }
    }
    env
}

/// One `env` entry's value; `None` when an optional reference is missing.
#[allow(clippy::too_many_arguments)]
fn env_var_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    inputs: &PodInputs,
    placement: &PodPlacement,
    namespace: &str,
    defined: &[(String, String)],
    services: &[(String, String)],
) -> Result<Option<String>, SpecError> {
    let Some(source) = &var.value_from else {
        let lookup = |name: &str| defined.iter().chain(services).find(|(n, _)| n == name).map(|(_, v)| v.clone());
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), lookup)));
    };
    if let Some(selector) = &source.config_map_key_ref {
        let optional = selector.optional.unwrap_or(false);
        return match inputs.config_map_value(&selector.name, &selector.key) {
            Some(Ok(value)) => Ok(Some(value)),
            None if optional => Ok(None),
            None => Err(SpecError::ConfigMapNotFound(selector.name.clone())),
            Some(Err(())) if optional => Ok(None),
            Some(Err(())) => Err(SpecError::ConfigMapKeyNotFound {
                namespace: namespace.to_owned(),
                name: selector.name.clone(),
                key: selector.key.clone(),
            }),
        };
    }
    if let Some(selector) = &source.secret_key_ref {
        let optional = selector.optional.unwrap_or(false);
        return match inputs.secret_value(&selector.name, &selector.key) {
            Some(Ok(value)) => Ok(Some(value)),
            None if optional => Ok(None),
            None => Err(SpecError::SecretNotFound(selector.name.clone())),
            Some(Err(())) if optional => Ok(None),
            Some(Err(())) => Err(SpecError::SecretKeyNotFound {
                namespace: namespace.to_owned(),
                name: selector.name.clone(),
                key: selector.key.clone(),
            }),
        };
    }
    if let Some(field) = &source.field_ref {
        return field_ref(pod, placement, &field.field_path).map(Some);
    }
    if let Some(resource) = &source.resource_field_ref {
        let target = match resource.container_name.as_deref() {
            Some(name) if name != container.name => {
                pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == name)).unwrap_or(container)
            }
            _ => container,
        };
        return resource_field_ref(target, placement, &resource.resource, resource.divisor.as_ref()).map(Some);
    }
    Ok(Some(String::new()))
}

/// The primary group of `uid` in the host's `/etc/passwd` (what the `host` image contains).
fn primary_gid(uid: u32) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(3)?.parse::<u32>().ok())?
            })
        })
        .unwrap_or(0)
}

/// Builds the process description of `container` in `pod`.
pub fn process_spec(
    pod: &Pod,
    container: &Container,
    inputs: &PodInputs,
    placement: &PodPlacement,
    hostname: &str,
) -> Result<ProcessSpec, SpecError> {
    let env = environment(pod, container, inputs, placement, hostname)?;
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|arg| expand(arg, lookup))
        .collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }

    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let security = container.security_context.as_ref();
    let uid = security.and_then(|s| s.run_as_user).or(pod_security.and_then(|s| s.run_as_user)).unwrap_or(0);
    let uid = u32::try_from(uid).unwrap_or(0);
    let gid = security
        .and_then(|s| s.run_as_group)
        .or(pod_security.and_then(|s| s.run_as_group))
        .and_then(|g| u32::try_from(g).ok())
        .unwrap_or_else(|| primary_gid(uid));
    let run_as_non_root =
        security.and_then(|s| s.run_as_non_root).or(pod_security.and_then(|s| s.run_as_non_root)).unwrap_or(false);
    if run_as_non_root && uid == 0 {
        return Err(SpecError::RunAsRoot { pod: pod_name(pod).to_owned(), container: container.name.clone() });
    }
    let mut additional_gids: Vec<u32> = pod_security
        .map(|s| s.supplemental_groups.iter().flatten().copied().chain(s.fs_group).collect::<Vec<i64>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    additional_gids.sort_unstable();
    additional_gids.dedup();

    let privileged = security.and_then(|s| s.privileged).unwrap_or(false);
    let resources = ContainerResources::of(container);
    Ok(ProcessSpec {
        argv,
        env,
        cwd: container.working_dir.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "/".to_owned()),
        uid,
        gid,
        additional_gids,
        capabilities: capabilities(security),
        no_new_privileges: !privileged && security.and_then(|s| s.allow_privilege_escalation) == Some(false),
        privileged,
        read_only_root: security.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        oom_score_adj: resources::oom_score_adj(resources::qos_class(pod), &resources, placement.node_memory_bytes),
        resources,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, ConfigMapKeySelector, EnvFromSource, EnvVarSource, ObjectFieldSelector, PodSecurityContext,
        PodSpec, ResourceFieldSelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn placement() -> PodPlacement {
        PodPlacement {
            pod_ip: "10.88.0.7".into(),
            host_ip: "192.168.1.2".into(),
            node_name: "node-a".into(),
            node_cpu_millis: 2000,
            node_memory_bytes: 8 << 30,
        }
    }

    fn pod_with(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec { containers: vec![container], ..Default::default() }),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let lookup = |name: &str| (name == "A").then(|| "x".to_owned());
        assert_eq!(expand("$(A)-$(B)", lookup), "x-$(B)");
        assert_eq!(expand("$$(A) $$ $5 $(A", lookup), "$(A) $ $5 $(A");
        assert_eq!(expand("plain", lookup), "plain");
    }

    #[test]
    fn environment_resolves_references_in_order() {
        let container = Container {
            name: "app".into(),
            command: vec!["echo".into(), "$(GREETING)".into()].into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                ..Default::default()
            }]),
            env: Some(vec![
                var("NAME", "world"),
                var("GREETING", "hello $(NAME) $(LATER)"),
                var("LATER", "late"),
                EnvVar {
                    name: "POD".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "APP".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['app']".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "MEM".into(),
                    value_from: Some(EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.memory".into(),
                            divisor: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Mi".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "MODE".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "settings".into(),
                            key: "mode".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let pod = pod_with(container.clone());
        let mut inputs = PodInputs::default();
        inputs.config_maps.insert(
            "settings".into(),
            ConfigMap { data: Some([("mode".to_owned(), "fast".to_owned())].into()), ..Default::default() },
        );
        let spec = process_spec(&pod, &container, &inputs, &placement(), "web-1").unwrap();
        let get = |name: &str| spec.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("GREETING"), Some("hello world $(LATER)"));
        assert_eq!(get("CFG_mode"), Some("fast"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("POD"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("MEM"), Some("8192"));
        assert_eq!(get("HOSTNAME"), Some("web-1"));
        assert_eq!(spec.argv, vec!["echo", "hello world $(LATER)"]);
        assert_eq!(spec.capabilities.len(), DEFAULT_CAPABILITIES.len());

        let missing = PodInputs::default();
        assert_eq!(
            process_spec(&pod, &container, &missing, &placement(), "web-1"),
            Err(SpecError::ConfigMapNotFound("settings".into()))
        );
    }

    #[test]
    fn service_links_field_refs_and_secret_env_from() {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::{SecretEnvSource, ServiceSpec};
        let field = |name: &str, path: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = Container {
            name: "app".into(),
            command: Some(vec!["run".into(), "--db=$(REDIS_MASTER_SERVICE_HOST)".into()]),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: "db".into(), optional: None }),
                ..Default::default()
            }]),
            env: Some(vec![
                var("DB_URL", "redis://$(REDIS_MASTER_SERVICE_HOST):$(REDIS_MASTER_SERVICE_PORT)"),
                field("NS", "metadata.namespace"),
                field("IP", "status.podIP"),
                field("NODE", "spec.nodeName"),
                // A container's own definition wins over a service variable.
                var("WEB_SERVICE_PORT", "mine"),
            ]),
            ..Default::default()
        };
        let pod = pod_with(container.clone());
        let service = |name: &str, ip: &str, ports: Vec<ServicePort>| Service {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(ServiceSpec { cluster_ip: Some(ip.into()), ports: Some(ports), ..Default::default() }),
            ..Default::default()
        };
        let port = |name: Option<&str>, number: i32, protocol: Option<&str>| ServicePort {
            name: name.map(str::to_owned),
            port: number,
            protocol: protocol.map(str::to_owned),
            ..Default::default()
        };
        let mut inputs = PodInputs {
            services: vec![
                service("redis-master", "10.96.0.11", vec![port(None, 6379, Some("TCP"))]),
                service("web", "10.96.0.12", vec![port(Some("http"), 80, None), port(Some("dns"), 53, Some("UDP"))]),
                service("headless", "None", vec![port(None, 80, None)]),
            ],
            ..Default::default()
        };
        inputs.secrets.insert(
            "db".into(),
            Secret { data: Some([("PASSWORD".to_owned(), ByteString(b"pw".to_vec()))].into()), ..Default::default() },
        );
        let spec = process_spec(&pod, &container, &inputs, &placement(), "web-1").unwrap();
        let get = |name: &str| spec.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_URL"), Some("redis://10.96.0.11:6379"));
        assert_eq!(spec.argv, vec!["run", "--db=10.96.0.11"]);
        assert_eq!(get("PASSWORD"), Some("pw"));
        assert_eq!((get("NS"), get("IP"), get("NODE")), (Some("shop"), Some("10.88.0.7"), Some("node-a")));
        assert_eq!(get("REDIS_MASTER_SERVICE_PORT"), Some("6379"));
        assert_eq!(get("REDIS_MASTER_PORT"), Some("tcp://10.96.0.11:6379"));
        assert_eq!(get("REDIS_MASTER_PORT_6379_TCP_ADDR"), Some("10.96.0.11"));
        assert_eq!(get("WEB_SERVICE_PORT"), Some("mine"));
        assert_eq!(get("WEB_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("WEB_PORT_53_UDP"), Some("udp://10.96.0.12:53"));
        assert_eq!(get("WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None, "no cluster IP, no variables");
    }

    #[test]
    fn security_context_and_capabilities() {
        let container = Container {
            name: "app".into(),
            command: Some(vec!["id".into()]),
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["NET_RAW".into(), "CAP_KILL".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut pod = pod_with(container.clone());
        pod.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            run_as_group: Some(3000),
            supplemental_groups: Some(vec![44]),
            fs_group: Some(2000),
            ..Default::default()
        });
        let spec = process_spec(&pod, &container, &PodInputs::default(), &placement(), "web-1").unwrap();
        assert_eq!((spec.uid, spec.gid), (1000, 3000));
        assert_eq!(spec.additional_gids, vec![44, 2000]);
        assert!(spec.read_only_root && spec.no_new_privileges && !spec.privileged);
        assert!(spec.capabilities.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!spec.capabilities.contains(&"CAP_NET_RAW".to_owned()));
        assert!(!spec.capabilities.contains(&"CAP_KILL".to_owned()));

        let mut root = container.clone();
        root.security_context = Some(SecurityContext { run_as_non_root: Some(true), ..Default::default() });
        assert!(matches!(
            process_spec(&pod_with(root.clone()), &root, &PodInputs::default(), &placement(), "x"),
            Err(SpecError::RunAsRoot { .. })
        ));

        let none = Container { name: "empty".into(), ..Default::default() };
        let error = process_spec(&pod_with(none.clone()), &none, &PodInputs::default(), &placement(), "x").unwrap_err();
        assert_eq!(error.reason(), "CreateContainerError");

        let dropped = capabilities(Some(&SecurityContext {
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: Some(vec!["chown".into()]) }),
            ..Default::default()
        }));
        assert_eq!(dropped, vec!["CAP_CHOWN".to_owned()]);
        let privileged = capabilities(Some(&SecurityContext { privileged: Some(true), ..Default::default() }));
        assert_eq!(privileged.len(), ALL_CAPABILITIES.len());
    }
}
