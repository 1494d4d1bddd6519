//! Validation for networking, discovery, coordination, RBAC and apiextensions kinds.

use serde_json::Value;

use super::json::{has, list_at, str_at};
use super::meta::label_selector;
use super::names::{
    dns1035_label, dns1123_label, dns1123_subdomain, invalid_shown, path_segment_name, port_name, port_num,
};
use super::pod::protocol;
use super::{Errors, child, nonnegative};
use crate::status::FieldError;

// ---- networking.k8s.io ----------------------------------------------------------------------

/// `IsWildcardDNS1123Subdomain`: `*.` followed by a subdomain.
fn wildcard_subdomain(host: &str) -> Vec<String> {
    match host.strip_prefix("*.") {
        Some(rest) if dns1123_subdomain(rest).is_empty() => Vec::new(),
        _ => vec![
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned(),
        ],
    }
}

fn host(h: &str, path: &str, errs: &mut Errors) {
    if h.is_empty() {
        return;
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        errs.push(FieldError::invalid(path, &Value::from(h), "must be a DNS name, not an IP address"));
    }
    let msgs = if h.contains('*') { wildcard_subdomain(h) } else { dns1123_subdomain(h) };
    for msg in msgs {
        errs.push(FieldError::invalid(path, &Value::from(h), &msg));
    }
}

fn ingress_backend(backend: &Value, path: &str, errs: &mut Errors) {
    let resource = has(backend, "/resource");
    let service = backend.get("service").filter(|s| s.is_object());
    match (resource, service) {
        (true, Some(_)) => {
            errs.push(FieldError::invalid(path, &Value::from(""), "cannot set both resource and service backends"))
        }
        (true, None) => {
            let r = &backend["resource"];
            for field in ["kind", "name"] {
                if str_at(r, &format!("/{field}")).is_empty() {
                    errs.push(FieldError::required(format!("{path}.resource.{field}"), ""));
                }
            }
        }
        (false, Some(svc)) => {
            let name = str_at(svc, "/name");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{path}.service.name"), ""));
            } else {
                for msg in dns1035_label(name) {
                    errs.push(FieldError::invalid(format!("{path}.service.name"), &Value::from(name), &msg));
                }
            }
            let port_name_value = str_at(svc, "/port/name");
            let number = svc.pointer("/port/number").and_then(Value::as_i64).unwrap_or(0);
            match (!port_name_value.is_empty(), number != 0) {
                (true, true) => {
                    errs.push(FieldError::invalid(path, &Value::from(""), "cannot set both port name & port number"))
                }
                (true, false) => {
                    for msg in port_name(port_name_value) {
                        errs.push(FieldError::invalid(
                            format!("{path}.service.port.name"),
                            &Value::from(port_name_value),
                            &msg,
                        ));
                    }
                }
                (false, true) => {
                    for msg in port_num(number) {
                        errs.push(FieldError::invalid(
                            format!("{path}.service.port.number"),
                            &Value::from(number),
                            &msg,
                        ));
                    }
                }
                (false, false) => errs.push(FieldError::required(path, "port name or number is required")),
            }
        }
        (false, None) => {
            errs.push(FieldError::invalid(path, &Value::from(""), "resource or service backend is required"))
        }
    }
}

pub(crate) fn ingress(obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let rules = list_at(spec, "/rules");
    if rules.is_empty() && !has(spec, "/defaultBackend") {
        errs.push(invalid_shown(
            "spec",
            "[]networking.IngressRule(nil)",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = spec.get("defaultBackend").filter(|b| b.is_object()) {
        ingress_backend(backend, "spec.defaultBackend", errs);
    }
    for (i, rule) in rules.iter().enumerate() {
        let rpath = format!("spec.rules[{i}]");
        host(str_at(rule, "/host"), &child(&rpath, "host"), errs);
        let Some(http) = rule.get("http").filter(|h| h.is_object()) else { continue };
        let paths = list_at(http, "/paths");
        if paths.is_empty() {
            errs.push(FieldError::required(format!("{rpath}.http.paths"), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let ppath = format!("{rpath}.http.paths[{j}]");
            let path_value = str_at(p, "/path");
            match p.get("pathType").and_then(Value::as_str) {
                None => {
                    errs.push(FieldError::required(child(&ppath, "pathType"), "pathType must be specified"));
                    continue;
                }
                Some("Exact" | "Prefix") => {
                    if !path_value.starts_with('/') {
                        errs.push(FieldError::invalid(
                            child(&ppath, "path"),
                            &Value::from(path_value),
                            "must be an absolute path",
                        ));
                    }
                    for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                        if path_value.contains(seq) {
                            errs.push(FieldError::invalid(
                                child(&ppath, "path"),
                                &Value::from(path_value),
                                &format!("must not contain '{seq}'"),
                            ));
                        }
                    }
                    for suffix in ["/..", "/."] {
                        if path_value.ends_with(suffix) {
                            errs.push(FieldError::invalid(
                                child(&ppath, "path"),
                                &Value::from(path_value),
                                &format!("cannot end with '{suffix}'"),
                            ));
                        }
                    }
                }
                Some("ImplementationSpecific") => {
                    if !path_value.is_empty() && !path_value.starts_with('/') {
                        errs.push(FieldError::invalid(
                            child(&ppath, "path"),
                            &Value::from(path_value),
                            "must be an absolute path",
                        ));
                    }
                }
                Some(other) => errs.push(FieldError::not_supported(
                    child(&ppath, "pathType"),
                    &Value::from(other),
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            ingress_backend(p.get("backend").unwrap_or(&Value::Null), &child(&ppath, "backend"), errs);
        }
    }
    for (i, tls) in list_at(spec, "/tls").iter().enumerate() {
        for (j, h) in list_at(tls, "/hosts").iter().enumerate() {
            host(h.as_str().unwrap_or_default(), &format!("spec.tls[{i}].hosts[{j}]"), errs);
        }
        let secret = str_at(tls, "/secretName");
        if !secret.is_empty() {
            for msg in dns1123_subdomain(secret) {
                errs.push(FieldError::invalid(format!("spec.tls[{i}].secretName"), &Value::from(secret), &msg));
            }
        }
    }
    if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        for msg in dns1123_subdomain(class) {
            errs.push(FieldError::invalid("spec.ingressClassName", &Value::from(class), &msg));
        }
    }
}

pub(crate) fn ingress_class(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let controller = str_at(spec, "/controller");
    if controller.is_empty() {
        errs.push(FieldError::required("spec.controller", ""));
    } else if controller.len() > 250 {
        errs.push(super::names::too_long("spec.controller", 250));
    }
    if let Some(params) = spec.get("parameters").filter(|p| p.is_object()) {
        for field in ["kind", "name"] {
            if str_at(params, &format!("/{field}")).is_empty() {
                errs.push(FieldError::required(format!("spec.parameters.{field}"), ""));
            }
        }
        match str_at(params, "/scope") {
            "Cluster" => {
                if has(params, "/namespace") {
                    errs.push(FieldError::forbidden(
                        "spec.parameters.namespace",
                        "`parameters.scope` is set to 'Cluster'",
                    ));
                }
            }
            "Namespace" => {
                if str_at(params, "/namespace").is_empty() {
                    errs.push(FieldError::required(
                        "spec.parameters.namespace",
                        "`parameters.scope` is set to 'Namespace'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                "spec.parameters.scope",
                &Value::from(other),
                &["Cluster", "Namespace"],
            )),
        }
    }
    if let Some(old) = old {
        let old_controller = str_at(old, "/spec/controller");
        if controller != old_controller {
            errs.push(FieldError::invalid("spec.controller", &Value::from(controller), "field is immutable"));
        }
    }
}

pub(crate) fn network_policy(obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    label_selector(spec.get("podSelector").unwrap_or(&Value::Null), "spec.podSelector", errs);
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in list_at(spec, &format!("/{direction}")).iter().enumerate() {
            let rpath = format!("spec.{direction}[{i}]");
            for (j, p) in list_at(rule, "/ports").iter().enumerate() {
                let ppath = format!("{rpath}.ports[{j}]");
                if has(p, "/protocol") {
                    protocol(p, &ppath, errs);
                }
                match p.get("port") {
                    Some(Value::Number(n)) => {
                        let n = n.as_i64().unwrap_or(0);
                        for msg in port_num(n) {
                            errs.push(FieldError::invalid(child(&ppath, "port"), &Value::from(n), &msg));
                        }
                        if let Some(end) = p.get("endPort").and_then(Value::as_i64)
                            && end < n
                        {
                            errs.push(FieldError::invalid(
                                child(&ppath, "endPort"),
                                &Value::from(end),
                                "must be greater than or equal to `port`",
                            ));
                        }
                    }
                    Some(Value::String(s)) => {
                        for msg in port_name(s) {
                            errs.push(FieldError::invalid(child(&ppath, "port"), &Value::from(s.as_str()), &msg));
                        }
                        if has(p, "/endPort") {
                            errs.push(FieldError::invalid(
                                child(&ppath, "endPort"),
                                &p["endPort"],
                                "may not be specified when `port` is non-numeric",
                            ));
                        }
                    }
                    _ => {
                        if has(p, "/endPort") {
                            errs.push(FieldError::required(
                                child(&ppath, "port"),
                                "must be specified when `endPort` is specified",
                            ));
                        }
                    }
                }
            }
            for (j, peer) in list_at(rule, &format!("/{peers}")).iter().enumerate() {
                let ppath = format!("{rpath}.{peers}[{j}]");
                let selectors =
                    ["podSelector", "namespaceSelector"].iter().filter(|s| has(peer, &format!("/{s}"))).count();
                let ip_block = peer.get("ipBlock").filter(|b| b.is_object());
                if selectors == 0 && ip_block.is_none() {
                    errs.push(FieldError::required(&ppath, "must specify a peer"));
                } else if selectors > 0 && ip_block.is_some() {
                    errs.push(FieldError::forbidden(&ppath, "may not specify both ipBlock and another peer"));
                }
                for sel in ["podSelector", "namespaceSelector"] {
                    if let Some(s) = peer.get(sel).filter(|s| s.is_object()) {
                        label_selector(s, &child(&ppath, sel), errs);
                    }
                }
                if let Some(block) = ip_block
                    && str_at(block, "/cidr").is_empty()
                {
                    errs.push(FieldError::required(format!("{ppath}.ipBlock.cidr"), ""));
                }
            }
        }
    }
    let types = list_at(spec, "/policyTypes");
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            &spec["policyTypes"],
            "may not specify more than two policyTypes",
        ));
    }
    for t in types {
        let t = t.as_str().unwrap_or_default();
        if t != "Ingress" && t != "Egress" {
            errs.push(FieldError::not_supported("spec.policyTypes", &Value::from(t), &["Ingress", "Egress"]));
        }
    }
}

// ---- discovery.k8s.io / coordination.k8s.io -----------------------------------------------

pub(crate) fn endpoint_slice(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let address_type = str_at(obj, "/addressType");
    if !["IPv4", "IPv6", "FQDN"].contains(&address_type) {
        errs.push(FieldError::not_supported("addressType", &Value::from(address_type), &["FQDN", "IPv4", "IPv6"]));
    }
    for (i, e) in list_at(obj, "/endpoints").iter().enumerate() {
        let epath = format!("endpoints[{i}]");
        let addresses = list_at(e, "/addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(child(&epath, "addresses"), "must contain at least 1 address"));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let ok = match address_type {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => dns1123_subdomain(a).is_empty(),
            };
            if !ok {
                let msg = match address_type {
                    "IPv4" => "must be a valid IPv4 address",
                    "IPv6" => "must be a valid IPv6 address",
                    _ => "must be a valid DNS subdomain",
                };
                errs.push(FieldError::invalid(format!("{epath}.addresses[{j}]"), &Value::from(a), msg));
            }
        }
    }
    for (i, p) in list_at(obj, "/ports").iter().enumerate() {
        let ppath = format!("ports[{i}]");
        if let Some(name) = p.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            for msg in dns1123_label(name) {
                errs.push(FieldError::invalid(child(&ppath, "name"), &Value::from(name), &msg));
            }
        }
        if let Some(n) = p.get("port").and_then(Value::as_i64) {
            for msg in port_num(n) {
                errs.push(FieldError::invalid(child(&ppath, "port"), &Value::from(n), &msg));
            }
        }
        if has(p, "/protocol") {
            protocol(p, &ppath, errs);
        }
    }
    if let Some(old) = old {
        let old_type = str_at(old, "/addressType");
        if address_type != old_type {
            errs.push(FieldError::invalid("addressType", &Value::from(address_type), "field is immutable"));
        }
    }
}

pub(crate) fn lease(obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64).filter(|d| *d <= 0) {
        errs.push(FieldError::invalid("spec.leaseDurationSeconds", &Value::from(d), "must be greater than 0"));
    }
    nonnegative(spec, "leaseTransitions", "spec", errs);
}

// ---- rbac.authorization.k8s.io --------------------------------------------------------------

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub(crate) fn role(obj: &Value, namespaced: bool, errs: &mut Errors) {
    let aggregated = obj.get("aggregationRule").filter(|a| a.is_object());
    if let Some(agg) = aggregated {
        let selectors = list_at(agg, "/clusterRoleSelectors");
        if selectors.is_empty() {
            errs.push(FieldError::required(
                "aggregationRule",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, s) in selectors.iter().enumerate() {
            label_selector(s, &format!("aggregationRule.clusterRoleSelectors[{i}]"), errs);
        }
    }
    for (i, rule) in list_at(obj, "/rules").iter().enumerate() {
        let path = format!("rules[{i}]");
        if list_at(rule, "/verbs").is_empty() {
            errs.push(FieldError::required(child(&path, "verbs"), "verbs must contain at least one value"));
        }
        let urls = list_at(rule, "/nonResourceURLs");
        if !urls.is_empty() {
            if namespaced {
                errs.push(FieldError::invalid(
                    child(&path, "nonResourceURLs"),
                    &rule["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !list_at(rule, "/apiGroups").is_empty()
                || !list_at(rule, "/resources").is_empty()
                || !list_at(rule, "/resourceNames").is_empty()
            {
                errs.push(FieldError::invalid(
                    child(&path, "nonResourceURLs"),
                    &rule["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if list_at(rule, "/apiGroups").is_empty() {
            errs.push(FieldError::required(
                child(&path, "apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if list_at(rule, "/resources").is_empty() {
            errs.push(FieldError::required(
                child(&path, "resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// `rbac.RoleRef` as `%#v` prints it.
fn go_role_ref(r: &Value) -> String {
    format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        str_at(r, "/apiGroup"),
        str_at(r, "/kind"),
        str_at(r, "/name")
    )
}

pub(crate) fn role_binding(obj: &Value, old: Option<&Value>, namespaced: bool, errs: &mut Errors) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let group = str_at(role_ref, "/apiGroup");
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported("roleRef.apiGroup", &Value::from(group), &[RBAC_GROUP]));
    }
    let kind = str_at(role_ref, "/kind");
    let kinds: &[&str] = if namespaced { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
    if !kinds.contains(&kind) {
        errs.push(FieldError::not_supported("roleRef.kind", &Value::from(kind), kinds));
    }
    let name = str_at(role_ref, "/name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for msg in path_segment_name(name) {
            errs.push(FieldError::invalid("roleRef.name", &Value::from(name), &msg));
        }
    }
    for (i, s) in list_at(obj, "/subjects").iter().enumerate() {
        let path = format!("subjects[{i}]");
        let subject_name = str_at(s, "/name");
        if subject_name.is_empty() {
            errs.push(FieldError::required(child(&path, "name"), ""));
        }
        let api_group = str_at(s, "/apiGroup");
        match str_at(s, "/kind") {
            "ServiceAccount" => {
                if !subject_name.is_empty() {
                    for msg in dns1123_subdomain(subject_name) {
                        errs.push(FieldError::invalid(child(&path, "name"), &Value::from(subject_name), &msg));
                    }
                }
                if !api_group.is_empty() {
                    errs.push(FieldError::not_supported(child(&path, "apiGroup"), &Value::from(api_group), &[""]));
                }
                if !namespaced && str_at(s, "/namespace").is_empty() {
                    errs.push(FieldError::required(child(&path, "namespace"), ""));
                }
            }
            "User" | "Group" => {
                if api_group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        child(&path, "apiGroup"),
                        &Value::from(api_group),
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&path, "kind"),
                &Value::from(other),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    if let Some(old) = old {
        let old_ref = old.get("roleRef").unwrap_or(&Value::Null);
        if go_role_ref(role_ref) != go_role_ref(old_ref) {
            errs.push(invalid_shown("roleRef", &go_role_ref(role_ref), "cannot change roleRef"));
        }
    }
}

// ---- apiextensions.k8s.io -------------------------------------------------------------------

pub(crate) fn crd(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let group = str_at(spec, "/group");
    let plural = str_at(spec, "/names/plural");
    let name = str_at(obj, "/metadata/name");
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &Value::from(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        for msg in dns1123_subdomain(group) {
            errs.push(FieldError::invalid("spec.group", &Value::from(group), &msg));
        }
        if group.split('.').count() < 2 {
            errs.push(FieldError::invalid(
                "spec.group",
                &Value::from(group),
                "should be a domain with at least one dot",
            ));
        }
    }
    match str_at(spec, "/scope") {
        "Cluster" | "Namespaced" => {}
        "" => errs.push(FieldError::required("spec.scope", "")),
        other => errs.push(FieldError::not_supported("spec.scope", &Value::from(other), &["Cluster", "Namespaced"])),
    }
    let names = spec.get("names").unwrap_or(&Value::Null);
    for field in ["plural", "singular", "listKind", "kind"] {
        let v = str_at(names, &format!("/{field}"));
        let path = format!("spec.names.{field}");
        if v.is_empty() {
            if field != "singular" {
                errs.push(FieldError::required(path, ""));
            }
            continue;
        }
        let ok = match field {
            "plural" | "singular" => dns1123_label(v).is_empty(),
            _ => dns1123_label(&v.to_lowercase()).is_empty(),
        };
        if !ok {
            let detail = match field {
                "plural" | "singular" => dns1123_label(v).join(", "),
                _ => "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?".to_owned(),
            };
            errs.push(FieldError::invalid(path, &Value::from(v), &detail));
        }
    }
    for (i, short) in list_at(names, "/shortNames").iter().enumerate() {
        let s = short.as_str().unwrap_or_default();
        for msg in dns1123_label(s) {
            errs.push(FieldError::invalid(format!("spec.names.shortNames[{i}]"), &Value::from(s), &msg));
        }
    }
    let versions = list_at(spec, "/versions");
    if versions.is_empty() {
        errs.push(FieldError::required("spec.versions", ""));
    }
    let mut storage = 0;
    let mut seen = std::collections::BTreeSet::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let vpath = format!("spec.versions[{i}]");
        let vname = str_at(v, "/name");
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
        unique &= seen.insert(vname.to_owned());
        let msgs = dns1035_label(vname);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(child(&vpath, "name"), &Value::from(vname), &msgs.join(",")));
        }
        if !has(v, "/schema/openAPIV3Schema") {
            errs.push(FieldError::required(format!("{vpath}.schema.openAPIV3Schema"), "schemas are required"));
        }
        for (j, column) in list_at(v, "/additionalPrinterColumns").iter().enumerate() {
            let cpath = format!("{vpath}.additionalPrinterColumns[{j}]");
            for field in ["name", "type", "jsonPath"] {
                if str_at(column, &format!("/{field}")).is_empty() {
                    errs.push(FieldError::required(child(&cpath, field), ""));
                }
            }
        }
    }
    if !versions.is_empty() {
        if !unique {
            errs.push(FieldError::invalid("spec.versions", &spec["versions"], "must contain unique version names"));
        }
        if storage != 1 {
            errs.push(FieldError::invalid(
                "spec.versions",
                &spec["versions"],
                "must have exactly one version marked as storage version",
            ));
        }
    }
    if let Some(old) = old {
        for field in ["group", "scope"] {
            let (n, o) = (str_at(spec, &format!("/{field}")), str_at(old, &format!("/spec/{field}")));
            if n != o {
                errs.push(FieldError::invalid(format!("spec.{field}"), &Value::from(n), "field is immutable"));
            }
        }
    }
}
