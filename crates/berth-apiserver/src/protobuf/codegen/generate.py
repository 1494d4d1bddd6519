#!/usr/bin/env python3
"""Generates `generated.rs`: JSON converters for the k8s-pb (prost) messages of the kinds Berth
accepts as protobuf request bodies.

Inputs:
  1. the k8s-pb crate source (field tags and Rust types), and
  2. a dump of the Go struct types compiled into kubectl (`go_types.py`), which gives, per field,
     the JSON name, `omitempty`, `,inline`, pointer-ness and the protobuf field number.

The join is by protobuf field number, so the generated code reproduces what Go's encoding/json
would print for the object client-go decoded from the same protobuf bytes.

Usage: generate.py <k8s-pb src dir> <go types json> > generated.rs
"""
import json
import os
import re
import sys

PB_SRC, GO_JSON = sys.argv[1], sys.argv[2]

# Top-level kinds: (rust module path, message, apiVersion). Berth's built-in kinds except CRDs.
ROOTS = [
    ("api::core::v1", "Namespace", "v1"),
    ("api::core::v1", "Pod", "v1"),
    ("api::core::v1", "Service", "v1"),
    ("api::core::v1", "Endpoints", "v1"),
    ("api::core::v1", "ConfigMap", "v1"),
    ("api::core::v1", "Secret", "v1"),
    ("api::core::v1", "ServiceAccount", "v1"),
    ("api::core::v1", "Event", "v1"),
    ("api::core::v1", "Node", "v1"),
    ("api::core::v1", "ResourceQuota", "v1"),
    ("api::core::v1", "LimitRange", "v1"),
    ("api::core::v1", "PersistentVolumeClaim", "v1"),
    ("api::core::v1", "PersistentVolume", "v1"),
    ("api::apps::v1", "Deployment", "apps/v1"),
    ("api::apps::v1", "ReplicaSet", "apps/v1"),
    ("api::apps::v1", "StatefulSet", "apps/v1"),
    ("api::apps::v1", "DaemonSet", "apps/v1"),
    ("api::apps::v1", "ControllerRevision", "apps/v1"),
    ("api::batch::v1", "Job", "batch/v1"),
    ("api::batch::v1", "CronJob", "batch/v1"),
    ("api::networking::v1", "Ingress", "networking.k8s.io/v1"),
    ("api::networking::v1", "IngressClass", "networking.k8s.io/v1"),
    ("api::networking::v1", "NetworkPolicy", "networking.k8s.io/v1"),
    ("api::discovery::v1", "EndpointSlice", "discovery.k8s.io/v1"),
    ("api::coordination::v1", "Lease", "coordination.k8s.io/v1"),
    ("api::rbac::v1", "Role", "rbac.authorization.k8s.io/v1"),
    ("api::rbac::v1", "RoleBinding", "rbac.authorization.k8s.io/v1"),
    ("api::rbac::v1", "ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("api::rbac::v1", "ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ("api::autoscaling::v1", "Scale", "autoscaling/v1"),
]

# Messages whose Go types have their own JSON marshalling; convert.rs implements these by hand.
HAND_WRITTEN = {
    ("apimachinery::pkg::apis::meta::v1", "Time"),
    ("apimachinery::pkg::apis::meta::v1", "MicroTime"),
    ("apimachinery::pkg::apis::meta::v1", "Duration"),
    ("apimachinery::pkg::apis::meta::v1", "FieldsV1"),
    ("apimachinery::pkg::util::intstr", "IntOrString"),
    ("apimachinery::pkg::api::resource", "Quantity"),
    ("apimachinery::pkg::runtime", "RawExtension"),
}

SCALARS = {"string", "int32", "int64", "bool", "double", "bytes"}


def parse_pb_crate(src):
    """{(module, message): {tag: field}} from prost-generated sources."""
    messages = {}
    for root, _dirs, files in os.walk(src):
        for fname in files:
            if fname != "mod.rs":
                continue
            rel = os.path.relpath(root, src)
            module = rel.replace(os.sep, "::")
            text = open(os.path.join(root, fname)).read()
            text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("///"))
            for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
                name, body = m.group(1), m.group(2)
                fields = {}
                for fm in re.finditer(r"#\[prost\((.*?)\)\]\s*pub ((?:r#)?\w+):\s*(.*?),\s*(?=#\[prost|$)", body, re.S):
                    attr, rust_name, rust_type = fm.group(1), fm.group(2), re.sub(r"\s+", "", fm.group(3))
                    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                    fields[tag] = parse_field(module, attr, rust_name, rust_type)
                messages[(module, name)] = fields
    return messages


def resolve_path(module, path):
    """Resolves a (possibly `super::`-relative) Rust type path to (module, name)."""
    parts = path.split("::")
    name = parts[-1]
    mod = module.split("::")
    rest = parts[:-1]
    if rest and rest[0] == "super":
        while rest and rest[0] == "super":
            mod = mod[:-1]
            rest = rest[1:]
        return ("::".join(mod + rest), name)
    if rest:
        return ("::".join(rest), name)
    return (module, name)


def inner(t, wrapper):
    assert t.startswith(wrapper + "<") and t.endswith(">"), (t, wrapper)
    return t[len(wrapper) + 1 : -1]


def parse_field(module, attr, rust_name, rust_type):
    kind = attr.split(",")[0].strip()
    f = {"rust": rust_name, "boxed": "boxed" in attr}
    if kind.startswith("btree_map"):
        key, value = re.search(r'btree_map = "(\w+), (\w+)"', attr).groups()
        assert key == "string", attr
        f["shape"] = "map"
        if value == "message":
            v = inner(rust_type, "::prost::alloc::collections::BTreeMap").split(",", 1)[1].rstrip(",")
            f["elem"] = ("message", resolve_path(module, v))
        else:
            f["elem"] = (value, None)
    elif "repeated" in attr:
        f["shape"] = "list"
        if kind == "message":
            f["elem"] = ("message", resolve_path(module, inner(rust_type, "::prost::alloc::vec::Vec")))
        else:
            f["elem"] = (kind, None)
    else:
        f["shape"] = "single"
        if kind == "message":
            t = inner(rust_type, "::core::option::Option")
            if f["boxed"]:
                t = inner(t, "::prost::alloc::boxed::Box")
            f["elem"] = ("message", resolve_path(module, t))
        elif kind.startswith("bytes"):
            f["elem"] = ("bytes", None)
        else:
            f["elem"] = (kind, None)
    return f


def go_pkg(module):
    return "k8s.io/" + module.replace("::", "/")


def parse_go(path):
    raw = json.load(open(path))
    index = {}
    for key, fields in raw.items():
        pkg, name = key.rsplit(".", 1)
        index[(pkg, name.lower())] = (name, fields)
    return index


def go_tag(tag, key):
    m = re.search(key + r':"([^"]*)"', tag)
    return m.group(1) if m else None


def lower_camel(rust_name):
    words = rust_name.removeprefix("r#").split("_")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def guessed_field(pf, queue):
    elem_kind, elem_msg = pf["elem"]
    if elem_kind == "message":
        queue.append(elem_msg)
    json_name = lower_camel(pf["rust"])
    rust_field = "self." + pf["rust"]
    if pf["shape"] == "single":
        if elem_kind == "message":
            value = f"{rust_field}.as_deref()" if pf["boxed"] else f"{rust_field}.as_ref()"
            return f'o.message("{json_name}", {value}, Presence::IfSet)?;'
        method = "bytes" if elem_kind == "bytes" else "scalar"
        return f'o.{method}("{json_name}", {rust_field}.as_ref(), Presence::IfSet)?;'
    method = ("bytes_" if elem_kind == "bytes" else "") + pf["shape"]
    return f'o.{method}("{json_name}", &{rust_field}, Empty::Omit)?;'


def main():
    pb = parse_pb_crate(PB_SRC)
    go = parse_go(GO_JSON)
    out = []
    warnings = []
    done = set()
    queue = [(m, n) for m, n, _ in ROOTS]
    while queue:
        key = queue.pop(0)
        if key in done or key in HAND_WRITTEN:
            continue
        done.add(key)
        module, name = key
        if key not in pb:
            sys.exit(f"k8s-pb has no message {module}::{name}")
        go_entry = go.get((go_pkg(module), name.lower()))
        if go_entry is None:
            warnings.append(f"{module}::{name}: no Go type in kubectl, all fields guessed")
            go_entry = (name, [])
        go_name, go_fields = go_entry
        pb_fields = pb[key]
        lines = []
        used = set()
        for gf in go_fields:
            ptag = go_tag(gf["tag"], "protobuf")
            jtag = go_tag(gf["tag"], "json")
            if ptag is None:
                if jtag not in (",inline", "-"):
                    warnings.append(f"{go_name}.{gf['go']}: no protobuf tag, not convertible")
                continue
            if jtag == "-":
                continue
            number = int(ptag.split(",")[1])
            pf = pb_fields.get(number)
            if pf is None:
                warnings.append(f"{go_name}.{gf['go']}: field {number} missing from k8s-pb")
                continue
            used.add(number)
            parts = (jtag or "").split(",")
            json_name = parts[0] or (None if "inline" in parts else gf["go"])
            omitempty = "omitempty" in parts
            inline = "inline" in parts
            gtype = gf["type"]
            pointer = gtype["kind"] == "ptr"
            elem_kind, elem_msg = pf["elem"]
            if elem_kind == "message":
                queue.append(elem_msg)
            rust_field = "self." + pf["rust"]
            if pf["shape"] == "single" and elem_kind == "message":
                value = f"{rust_field}.as_deref()" if pf["boxed"] else f"{rust_field}.as_ref()"
                if inline:
                    lines.append(f"o.inline({value})?;")
                else:
                    presence = "Presence::IfSet" if pointer else "Presence::Always"
                    lines.append(f'o.message("{json_name}", {value}, {presence})?;')
            elif pf["shape"] == "single":
                assert not inline
                if pointer:
                    presence = "Presence::IfSet"
                elif omitempty:
                    presence = "Presence::NonZero"
                else:
                    presence = "Presence::Always"
                method = "bytes" if elem_kind == "bytes" else "scalar"
                lines.append(f'o.{method}("{json_name}", {rust_field}.as_ref(), {presence})?;')
            else:
                assert gtype["kind"] in ("slice", "map"), (go_name, gf)
                empty = "Empty::Omit" if omitempty else "Empty::Null"
                method = pf["shape"]
                if elem_kind == "bytes":
                    method = "bytes_" + method
                lines.append(f'o.{method}("{json_name}", &{rust_field}, {empty})?;')
        for number, pf in sorted(pb_fields.items()):
            if number not in used:
                # Newer than the kubectl the Go types came from: follow the API conventions that
                # every new field is optional (a pointer or omitempty) and named in lowerCamelCase.
                warnings.append(f"{go_name}: k8s-pb field {pf['rust']} ({number}) has no Go field, guessed")
                lines.append(guessed_field(pf, queue))
        rust_path = "pb::" + module + "::" + name
        body = "\n        ".join(lines)
        out.append(
            f"impl ToJson for {rust_path} {{\n"
            f"    fn to_json(&self) -> Result<Value, ConvertError> {{\n"
            f"        let mut o = JsonObject::default();\n"
            f"        {body}\n"
            f"        Ok(o.into_value())\n"
            f"    }}\n"
            f"}}\n"
        )
    roots = "\n".join(
        f'    ("{api_version}", "{name}", decode_object::<pb::{module}::{name}>),' for module, name, api_version in ROOTS
    )
    header = (
        "// @generated by protobuf/codegen/generate.py from the k8s-pb crate and the Go types in kubectl.\n"
        "// Do not edit by hand: change the generator and run it again (see codegen/README.md).\n\n"
        "use k8s_pb as pb;\n"
        "use serde_json::Value;\n\n"
        "use super::convert::{ConvertError, Empty, JsonObject, Presence, ToJson};\n"
        "use super::{ObjectError, decode_object};\n\n"
        "/// Decodes one object message into JSON (without `apiVersion` and `kind`).\n"
        "pub(super) type Decoder = fn(&[u8]) -> Result<Value, ObjectError>;\n\n"
        "/// Kinds accepted as protobuf bodies: (apiVersion, kind, decoder of the raw message).\n"
        f"pub(super) const KINDS: &[(&str, &str, Decoder)] = &[\n{roots}\n];\n\n"
    )
    sys.stdout.write(header + "\n".join(out))
    for w in warnings:
        print("warning:", w, file=sys.stderr)
    print(f"{len(done)} messages", file=sys.stderr)


main()
