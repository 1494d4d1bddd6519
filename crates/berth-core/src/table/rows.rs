//! One printer per kind, producing the cells upstream's `print*` functions produce with
//! `Wide: true` (which is how the API server calls them).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::format::{
    access_modes, format_label_selector, format_labels, layout_containers, list_with_more, parse_time, quantity,
    selector_string,
};
use super::{age, human_duration};
use crate::validation::json::{at, bool_at, has, int_at, list_at, map_at, opt_str, str_at};

pub(super) struct Printing<'a> {
    pub(super) obj: &'a Value,
    pub(super) now: DateTime<Utc>,
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".to_owned() } else { s.to_owned() }
}

fn condition_true(conditions: &[Value], kind: &str) -> bool {
    // Upstream looks at the first condition of a type only.
    conditions.iter().find(|c| str_at(c, "/type") == kind).is_some_and(|c| str_at(c, "/status") == "True")
}

impl Printing<'_> {
    fn name(&self) -> Value {
        json!(str_at(self.obj, "/metadata/name"))
    }

    fn age(&self) -> Value {
        json!(age(opt_str(self.obj, "/metadata/creationTimestamp"), self.now))
    }

    fn since(&self, ts: Option<&str>) -> String {
        age(ts, self.now)
    }

    fn deleting(&self) -> bool {
        has(self.obj, "/metadata/deletionTimestamp")
    }

    pub(super) fn generic_row(&self) -> Vec<Value> {
        vec![self.name(), self.age()]
    }

    /// `rest.DefaultTableConvertor`: the creation time in RFC 3339, UTC.
    pub(super) fn default_row(&self) -> Vec<Value> {
        let created = parse_time(opt_str(self.obj, "/metadata/creationTimestamp"))
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned());
        vec![self.name(), json!(created)]
    }

    pub(super) fn pod(&self) -> Vec<Value> {
        let o = self.obj;
        let init_specs = list_at(o, "/spec/initContainers");
        let restartable = |c: &Value| c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        let restartable_named = |name: &str| init_specs.iter().any(|c| str_at(c, "/name") == name && restartable(c));
        let total = list_at(o, "/spec/containers").len() + init_specs.iter().filter(|c| restartable(c)).count();
        let conditions = list_at(o, "/status/conditions");

        let phase = str_at(o, "/status/phase");
        let status_reason = str_at(o, "/status/reason");
        let mut reason = if status_reason.is_empty() { phase.to_owned() } else { status_reason.to_owned() };
        if conditions.iter().any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
        {
            reason = "SchedulingGated".to_owned();
        }

        let finished = |c: &Value| parse_time(opt_str(c, "/lastState/terminated/finishedAt"));
        let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };

        let mut restarts = 0;
        let mut restartable_restarts = 0;
        let mut ready = 0;
        let mut last_restart = None;
        let mut last_restartable_restart = None;
        let mut initializing = false;
        for (i, c) in list_at(o, "/status/initContainerStatuses").iter().enumerate() {
            let count = int_at(c, "/restartCount");
            restarts += count;
            last_restart = later(last_restart, finished(c));
            let is_restartable = restartable_named(str_at(c, "/name"));
            if is_restartable {
                restartable_restarts += count;
                last_restartable_restart = later(last_restartable_restart, finished(c));
            }
            let terminated = at(c, "/state/terminated").filter(|t| t.is_object());
            let waiting_reason = str_at(c, "/state/waiting/reason");
            if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
                continue;
            }
            if is_restartable && bool_at(c, "/started") {
                if bool_at(c, "/ready") {
                    ready += 1;
                }
                continue;
            }
            if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if !r.is_empty() {
                    format!("Init:{r}")
                } else if int_at(t, "/signal") != 0 {
                    format!("Init:Signal:{}", int_at(t, "/signal"))
                } else {
                    format!("Init:ExitCode:{}", int_at(t, "/exitCode"))
                };
            } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
                reason = format!("Init:{waiting_reason}");
            } else {
                reason = format!("Init:{i}/{}", init_specs.len());
            }
            initializing = true;
            break;
        }

        if !initializing || condition_true(conditions, "Initialized") {
            restarts = restartable_restarts;
            last_restart = last_restartable_restart;
            let mut has_running = false;
            for c in list_at(o, "/status/containerStatuses").iter().rev() {
                restarts += int_at(c, "/restartCount");
                last_restart = later(last_restart, finished(c));
                let waiting = str_at(c, "/state/waiting/reason");
                let terminated = at(c, "/state/terminated").filter(|t| t.is_object());
                if !waiting.is_empty() {
                    reason = waiting.to_owned();
                } else if let Some(t) = terminated {
                    let r = str_at(t, "/reason");
                    reason = if !r.is_empty() {
                        r.to_owned()
                    } else if int_at(t, "/signal") != 0 {
                        format!("Signal:{}", int_at(t, "/signal"))
                    } else {
                        format!("ExitCode:{}", int_at(t, "/exitCode"))
                    };
                } else if bool_at(c, "/ready") && at(c, "/state/running").is_some_and(Value::is_object) {
                    has_running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && has_running {
                reason = if condition_true(conditions, "Ready") { "Running" } else { "NotReady" }.to_owned();
            }
        }

        if self.deleting() && status_reason == "NodeLost" {
            reason = "Unknown".to_owned();
        } else if self.deleting() && phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_owned();
        }

        let restarts_cell = match last_restart {
            Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration((self.now - t).num_seconds())),
            _ => restarts.to_string(),
        };

        let pod_ip = list_at(o, "/status/podIPs")
            .first()
            .map(|ip| str_at(ip, "/ip"))
            .unwrap_or_else(|| str_at(o, "/status/podIP"));
        let gates = list_at(o, "/spec/readinessGates");
        let readiness_gates = if gates.is_empty() {
            "<none>".to_owned()
        } else {
            let passing = gates.iter().filter(|g| condition_true(conditions, str_at(g, "/conditionType"))).count();
            format!("{passing}/{}", gates.len())
        };
        vec![
            self.name(),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            self.age(),
            json!(or_none(pod_ip)),
            json!(or_none(str_at(o, "/spec/nodeName"))),
            json!(or_none(str_at(o, "/status/nominatedNodeName"))),
            json!(readiness_gates),
        ]
    }

    fn template_containers(&self, template_ptr: &str) -> (String, String) {
        layout_containers(list_at(self.obj, &format!("{template_ptr}/spec/containers")))
    }

    pub(super) fn deployment(&self) -> Vec<Value> {
        let o = self.obj;
        let (names, images) = self.template_containers("/spec/template");
        let selector = selector_string(at(o, "/spec/selector")).unwrap_or_else(|| "<invalid>".to_owned());
        vec![
            self.name(),
            json!(format!("{}/{}", int_at(o, "/status/readyReplicas"), int_at(o, "/spec/replicas"))),
            json!(int_at(o, "/status/updatedReplicas")),
            json!(int_at(o, "/status/availableReplicas")),
            self.age(),
            json!(names),
            json!(images),
            json!(selector),
        ]
    }

    pub(super) fn replica_set(&self) -> Vec<Value> {
        let o = self.obj;
        let (names, images) = self.template_containers("/spec/template");
        vec![
            self.name(),
            json!(int_at(o, "/spec/replicas")),
            json!(int_at(o, "/status/replicas")),
            json!(int_at(o, "/status/readyReplicas")),
            self.age(),
            json!(names),
            json!(images),
            json!(format_label_selector(at(o, "/spec/selector"))),
        ]
    }

    pub(super) fn stateful_set(&self) -> Vec<Value> {
        let o = self.obj;
        let (names, images) = self.template_containers("/spec/template");
        vec![
            self.name(),
            json!(format!("{}/{}", int_at(o, "/status/readyReplicas"), int_at(o, "/spec/replicas"))),
            self.age(),
            json!(names),
            json!(images),
        ]
    }

    pub(super) fn daemon_set(&self) -> Vec<Value> {
        let o = self.obj;
        let (names, images) = self.template_containers("/spec/template");
        vec![
            self.name(),
            json!(int_at(o, "/status/desiredNumberScheduled")),
            json!(int_at(o, "/status/currentNumberScheduled")),
            json!(int_at(o, "/status/numberReady")),
            json!(int_at(o, "/status/updatedNumberScheduled")),
            json!(int_at(o, "/status/numberAvailable")),
            json!(format_labels(at(o, "/spec/template/spec/nodeSelector"))),
            self.age(),
            json!(names),
            json!(images),
            json!(format_label_selector(at(o, "/spec/selector"))),
        ]
    }

    pub(super) fn job(&self) -> Vec<Value> {
        let o = self.obj;
        let succeeded = int_at(o, "/status/succeeded");
        let completions = match at(o, "/spec/completions").and_then(Value::as_i64) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match int_at(o, "/spec/parallelism") {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let start = parse_time(opt_str(o, "/status/startTime"));
        let completion = parse_time(opt_str(o, "/status/completionTime"));
        let duration = match (start, completion) {
            (None, _) => String::new(),
            (Some(s), None) => human_duration((self.now - s).num_seconds()),
            (Some(s), Some(c)) => human_duration((c - s).num_seconds()),
        };
        let conditions = list_at(o, "/status/conditions");
        let status = if condition_true(conditions, "Complete") {
            "Complete"
        } else if condition_true(conditions, "Failed") {
            "Failed"
        } else if self.deleting() {
            "Terminating"
        } else if condition_true(conditions, "Suspended") {
            "Suspended"
        } else if condition_true(conditions, "FailureTarget") {
            "FailureTarget"
        } else {
            "Running"
        };
        let (names, images) = self.template_containers("/spec/template");
        vec![
            self.name(),
            json!(status),
            json!(completions),
            json!(duration),
            self.age(),
            json!(names),
            json!(images),
            json!(format_label_selector(at(o, "/spec/selector"))),
        ]
    }

    pub(super) fn cron_job(&self) -> Vec<Value> {
        let o = self.obj;
        let last_schedule = match opt_str(o, "/status/lastScheduleTime") {
            Some(t) => self.since(Some(t)),
            None => "<none>".to_owned(),
        };
        let suspend = match at(o, "/spec/suspend").and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let (names, images) = self.template_containers("/spec/jobTemplate/spec/template");
        vec![
            self.name(),
            json!(str_at(o, "/spec/schedule")),
            json!(opt_str(o, "/spec/timeZone").unwrap_or("<none>")),
            json!(suspend),
            json!(list_at(o, "/status/active").len()),
            json!(last_schedule),
            self.age(),
            json!(names),
            json!(images),
            json!(format_label_selector(at(o, "/spec/jobTemplate/spec/selector"))),
        ]
    }

    fn external_ips(&self) -> Vec<String> {
        list_at(self.obj, "/spec/externalIPs").iter().filter_map(Value::as_str).map(str::to_owned).collect()
    }

    /// `getServiceExternalIP` with `wide` set, so load-balancer addresses are not clipped.
    fn service_external_ip(&self) -> String {
        let o = self.obj;
        let external = self.external_ips();
        match str_at(o, "/spec/type") {
            "ClusterIP" | "NodePort" => {
                if external.is_empty() {
                    "<none>".to_owned()
                } else {
                    external.join(",")
                }
            }
            "LoadBalancer" => {
                let lb = load_balancer_addresses(list_at(o, "/status/loadBalancer/ingress"));
                let mut all: Vec<String> = lb.clone();
                all.extend(external.iter().cloned());
                if !external.is_empty() {
                    all.join(",")
                } else if !lb.is_empty() {
                    lb.join(",")
                } else {
                    "<pending>".to_owned()
                }
            }
            "ExternalName" => str_at(o, "/spec/externalName").to_owned(),
            _ => "<unknown>".to_owned(),
        }
    }

    pub(super) fn service(&self) -> Vec<Value> {
        let o = self.obj;
        let cluster_ip = list_at(o, "/spec/clusterIPs")
            .first()
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| "<none>".to_owned());
        let ports: Vec<String> = list_at(o, "/spec/ports")
            .iter()
            .map(|p| {
                let (port, node_port, proto) = (int_at(p, "/port"), int_at(p, "/nodePort"), str_at(p, "/protocol"));
                if node_port > 0 { format!("{port}:{node_port}/{proto}") } else { format!("{port}/{proto}") }
            })
            .collect();
        let ports = if ports.is_empty() { "<none>".to_owned() } else { ports.join(",") };
        vec![
            self.name(),
            json!(str_at(o, "/spec/type")),
            json!(cluster_ip),
            json!(self.service_external_ip()),
            json!(ports),
            self.age(),
            json!(format_labels(at(o, "/spec/selector"))),
        ]
    }

    /// `formatEndpoints` with no port filter.
    pub(super) fn endpoints(&self) -> Vec<Value> {
        const MAX: usize = 3;
        let subsets = list_at(self.obj, "/subsets");
        let text = if subsets.is_empty() {
            "<none>".to_owned()
        } else {
            let mut list: Vec<String> = Vec::new();
            let mut count = 0;
            let mut more = false;
            for ss in subsets {
                let addresses = list_at(ss, "/addresses");
                let ports = list_at(ss, "/ports");
                if ports.is_empty() {
                    count += addresses.len();
                    for a in addresses {
                        if list.len() == MAX {
                            more = true;
                            break;
                        }
                        list.push(str_at(a, "/ip").to_owned());
                    }
                    continue;
                }
                for p in ports {
                    count += addresses.len();
                    for a in addresses {
                        if list.len() == MAX {
                            more = true;
                            break;
                        }
                        list.push(join_host_port(str_at(a, "/ip"), int_at(p, "/port")));
                    }
                }
            }
            let joined = list.join(",");
            if more { format!("{joined} + {} more...", count - MAX) } else { joined }
        };
        vec![self.name(), json!(text), self.age()]
    }

    pub(super) fn endpoint_slice(&self) -> Vec<Value> {
        let o = self.obj;
        let ports_all = list_at(o, "/ports");
        let ports: Vec<String> = ports_all
            .iter()
            .map(|p| match (p.get("port").and_then(Value::as_i64), p.get("name").and_then(Value::as_str)) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_owned(),
                (None, None) => "*".to_owned(),
            })
            .collect();
        let addresses: Vec<String> = list_at(o, "/endpoints")
            .iter()
            .flat_map(|e| list_at(e, "/addresses").iter().filter_map(Value::as_str).map(str::to_owned))
            .collect();
        vec![
            self.name(),
            json!(str_at(o, "/addressType")),
            json!(list_with_more(&ports, ports.len(), "<unset>")),
            json!(list_with_more(&addresses, addresses.len(), "<unset>")),
            self.age(),
        ]
    }

    pub(super) fn config_map(&self) -> Vec<Value> {
        let count = |p| map_at(self.obj, p).map_or(0, |m| m.len());
        vec![self.name(), json!(count("/data") + count("/binaryData")), self.age()]
    }

    pub(super) fn secret(&self) -> Vec<Value> {
        let data = map_at(self.obj, "/data").map_or(0, |m| m.len());
        vec![self.name(), json!(str_at(self.obj, "/type")), json!(data), self.age()]
    }

    pub(super) fn service_account(&self) -> Vec<Value> {
        vec![self.name(), json!(list_at(self.obj, "/secrets").len()), self.age()]
    }

    pub(super) fn namespace(&self) -> Vec<Value> {
        vec![self.name(), json!(str_at(self.obj, "/status/phase")), self.age()]
    }

    pub(super) fn node(&self) -> Vec<Value> {
        let o = self.obj;
        // Upstream keeps the last condition of each type.
        let ready = list_at(o, "/status/conditions").iter().rev().find(|c| str_at(c, "/type") == "Ready");
        let mut status: Vec<&str> = vec![match ready {
            Some(c) if str_at(c, "/status") == "True" => "Ready",
            Some(_) => "NotReady",
            None => "Unknown",
        }];
        if bool_at(o, "/spec/unschedulable") {
            status.push("SchedulingDisabled");
        }
        let mut roles = BTreeSet::new();
        if let Some(labels) = map_at(o, "/metadata/labels") {
            for (k, v) in labels {
                if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                    if !role.is_empty() {
                        roles.insert(role.to_owned());
                    }
                } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
                    roles.insert(v.as_str().unwrap_or_default().to_owned());
                }
            }
        }
        let roles =
            if roles.is_empty() { "<none>".to_owned() } else { roles.into_iter().collect::<Vec<_>>().join(",") };
        let address = |kind: &str| {
            list_at(o, "/status/addresses")
                .iter()
                .find(|a| str_at(a, "/type") == kind)
                .map(|a| str_at(a, "/address").to_owned())
                .unwrap_or_else(|| "<none>".to_owned())
        };
        let info = |field: &str| {
            let v = str_at(o, &format!("/status/nodeInfo/{field}"));
            if v.is_empty() { "<unknown>".to_owned() } else { v.to_owned() }
        };
        vec![
            self.name(),
            json!(status.join(",")),
            json!(roles),
            self.age(),
            json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(info("osImage")),
            json!(info("kernelVersion")),
            json!(info("containerRuntimeVersion")),
        ]
    }

    pub(super) fn event(&self) -> Vec<Value> {
        let o = self.obj;
        let first = match opt_str(o, "/firstTimestamp") {
            Some(t) => self.since(Some(t)),
            None => self.since(opt_str(o, "/eventTime")),
        };
        let mut last = match opt_str(o, "/lastTimestamp") {
            Some(t) => self.since(Some(t)),
            None => first.clone(),
        };
        let mut count = int_at(o, "/count");
        if has(o, "/series") {
            last = self.since(opt_str(o, "/series/lastObservedTime"));
            count = int_at(o, "/series/count");
        } else if count == 0 {
            // Singleton events from the events.k8s.io API carry no count.
            count = 1;
        }
        let kind = str_at(o, "/involvedObject/kind").to_lowercase();
        let target = match str_at(o, "/involvedObject/name") {
            "" => kind,
            name => format!("{kind}/{name}"),
        };
        let component = first_non_empty(str_at(o, "/source/component"), str_at(o, "/reportingComponent"));
        let instance = first_non_empty(str_at(o, "/source/host"), str_at(o, "/reportingInstance"));
        let source = if instance.is_empty() { component.to_owned() } else { format!("{component}, {instance}") };
        vec![
            json!(last),
            json!(str_at(o, "/type")),
            json!(str_at(o, "/reason")),
            json!(target),
            json!(str_at(o, "/involvedObject/fieldPath")),
            json!(source),
            json!(str_at(o, "/message").trim()),
            json!(first),
            json!(count),
            self.name(),
        ]
    }

    pub(super) fn resource_quota(&self) -> Vec<Value> {
        let o = self.obj;
        let hard = map_at(o, "/status/hard");
        let used = map_at(o, "/status/used");
        let names: BTreeMap<&String, ()> = hard.map(|h| h.keys().map(|k| (k, ())).collect()).unwrap_or_default();
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        for name in names.keys() {
            let entry = format!("{name}: {}/{}", quantity(used, name), quantity(hard, name));
            let is_limit = name.split('.').count() > 1 && name.split('.').next() == Some("limits");
            if is_limit { limits.push(entry) } else { requests.push(entry) }
        }
        vec![self.name(), json!(requests.join(", ")), json!(limits.join(", ")), self.age()]
    }

    pub(super) fn persistent_volume_claim(&self) -> Vec<Value> {
        let o = self.obj;
        let phase = if self.deleting() { "Terminating" } else { str_at(o, "/status/phase") };
        let volume = str_at(o, "/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (quantity(map_at(o, "/status/capacity"), "storage"), access_modes(list_at(o, "/status/accessModes")))
        };
        let class = opt_str(o, "/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .unwrap_or_else(|| str_at(o, "/spec/storageClassName"));
        vec![
            self.name(),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(class),
            json!(opt_str(o, "/spec/volumeAttributesClassName").unwrap_or("<unset>")),
            self.age(),
            json!(opt_str(o, "/spec/volumeMode").unwrap_or("<unset>")),
        ]
    }

    pub(super) fn persistent_volume(&self) -> Vec<Value> {
        let o = self.obj;
        let claim = if has(o, "/spec/claimRef") {
            format!("{}/{}", str_at(o, "/spec/claimRef/namespace"), str_at(o, "/spec/claimRef/name"))
        } else {
            String::new()
        };
        let phase = if self.deleting() { "Terminating" } else { str_at(o, "/status/phase") };
        let class = opt_str(o, "/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .unwrap_or_else(|| str_at(o, "/spec/storageClassName"));
        vec![
            self.name(),
            json!(quantity(map_at(o, "/spec/capacity"), "storage")),
            json!(access_modes(list_at(o, "/spec/accessModes"))),
            json!(str_at(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(phase),
            json!(claim),
            json!(class),
            json!(opt_str(o, "/spec/volumeAttributesClassName").unwrap_or("<unset>")),
            json!(str_at(o, "/status/reason")),
            self.age(),
            json!(opt_str(o, "/spec/volumeMode").unwrap_or("<unset>")),
        ]
    }

    pub(super) fn ingress(&self) -> Vec<Value> {
        const MAX: usize = 3;
        let o = self.obj;
        let rules = list_at(o, "/spec/rules");
        let mut hosts: Vec<&str> = Vec::new();
        let mut more = false;
        for rule in rules {
            if hosts.len() == MAX {
                more = true;
            }
            let host = str_at(rule, "/host");
            if !more && !host.is_empty() {
                hosts.push(host);
            }
        }
        let hosts = if hosts.is_empty() {
            "*".to_owned()
        } else if more {
            format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
        } else {
            hosts.join(",")
        };
        let address = load_balancer_addresses(list_at(o, "/status/loadBalancer/ingress")).join(",");
        let ports = if list_at(o, "/spec/tls").is_empty() { "80" } else { "80, 443" };
        vec![
            self.name(),
            json!(opt_str(o, "/spec/ingressClassName").unwrap_or("<none>")),
            json!(hosts),
            json!(address),
            json!(ports),
            self.age(),
        ]
    }

    pub(super) fn ingress_class(&self) -> Vec<Value> {
        let o = self.obj;
        let parameters = if has(o, "/spec/parameters") {
            let mut p = str_at(o, "/spec/parameters/kind").to_owned();
            if let Some(group) = opt_str(o, "/spec/parameters/apiGroup") {
                p = format!("{p}.{group}");
            }
            format!("{p}/{}", str_at(o, "/spec/parameters/name"))
        } else {
            "<none>".to_owned()
        };
        vec![self.name(), json!(str_at(o, "/spec/controller")), json!(parameters), self.age()]
    }

    pub(super) fn network_policy(&self) -> Vec<Value> {
        let selector = at(self.obj, "/spec/podSelector").cloned().unwrap_or_else(|| json!({}));
        vec![self.name(), json!(format_label_selector(Some(&selector))), self.age()]
    }

    pub(super) fn lease(&self) -> Vec<Value> {
        vec![self.name(), json!(str_at(self.obj, "/spec/holderIdentity")), self.age()]
    }

    pub(super) fn role_binding(&self) -> Vec<Value> {
        let o = self.obj;
        let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
        for s in list_at(o, "/subjects") {
            let name = str_at(s, "/name");
            match str_at(s, "/kind") {
                "ServiceAccount" => sas.push(format!("{}/{name}", str_at(s, "/namespace"))),
                "User" => users.push(name.to_owned()),
                "Group" => groups.push(name.to_owned()),
                _ => {}
            }
        }
        vec![
            self.name(),
            json!(format!("{}/{}", str_at(o, "/roleRef/kind"), str_at(o, "/roleRef/name"))),
            self.age(),
            json!(users.join(", ")),
            json!(groups.join(", ")),
            json!(sas.join(", ")),
        ]
    }

    pub(super) fn controller_revision(&self) -> Vec<Value> {
        let o = self.obj;
        let controller = list_at(o, "/metadata/ownerReferences")
            .iter()
            .find(|r| bool_at(r, "/controller"))
            .map(|r| {
                let kind = str_at(r, "/kind");
                let group = str_at(r, "/apiVersion").split_once('/').map(|(g, _)| g).unwrap_or("");
                let group_kind = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
                if group_kind.is_empty() {
                    str_at(r, "/name").to_owned()
                } else {
                    format!("{}/{}", group_kind.to_lowercase(), str_at(r, "/name"))
                }
            })
            .unwrap_or_else(|| "<none>".to_owned());
        vec![self.name(), json!(controller), json!(int_at(o, "/revision")), self.age()]
    }
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated.
fn load_balancer_addresses(ingress: &[Value]) -> Vec<String> {
    let set: BTreeSet<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "/ip");
            let host = str_at(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

/// `net.JoinHostPort`: IPv6 addresses are bracketed.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}
