#!/usr/bin/env python3
"""Generates apiserver/src/protobuf/generated.rs: JSON conversions for the k8s-pb message types
that request bodies of the served kinds can contain.

Inputs, both from the cargo registry (the versions in Cargo.lock):
- k8s-pb: the prost message structs (field names, wire types, nesting);
- k8s-openapi (v1_33): each type's JSON field names (its deserializers' `"jsonName" =>` arms).

A k8s-pb field whose name has no JSON counterpart, but whose message's fields all appear in the
parent's JSON names, is an inlined Go struct (Volume.volumeSource) and is flattened.

Run from the repository root after changing either crate's version:
    python3 tools/gen_protobuf_json.py && cargo fmt --all
"""
import glob
import os
import re
import sys

REGISTRY = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))[0]


def crate_dir(name):
    lock = open("Cargo.lock").read()
    m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
    if not m:
        sys.exit(f"{name} is not in Cargo.lock")
    return os.path.join(REGISTRY, f"{name}-{m.group(1)}")


PB = crate_dir("k8s-pb")
OA = os.path.join(crate_dir("k8s-openapi"), "src", "v1_33")

# Types whose JSON form is not their fields: written by hand in protobuf/mod.rs.
MANUAL = {
    "apimachinery::pkg::apis::meta::v1::Time",
    "apimachinery::pkg::apis::meta::v1::MicroTime",
    "apimachinery::pkg::apis::meta::v1::Duration",
    "apimachinery::pkg::apis::meta::v1::FieldsV1",
    "apimachinery::pkg::api::resource::Quantity",
    "apimachinery::pkg::util::intstr::IntOrString",
    "apimachinery::pkg::runtime::RawExtension",
    # Go []string types that protobuf wraps in a message with `items`.
    "api::authentication::v1::ExtraValue",
    "api::authorization::v1::ExtraValue",
}

# (module, kind, apiVersion) of the top-level objects a body may hold.
ROOTS = [
    ("api::core::v1", k, "v1")
    for k in ["Namespace", "Pod", "Service", "Endpoints", "ConfigMap", "Secret", "Node", "Event", "ServiceAccount", "Binding", "PersistentVolume", "PersistentVolumeClaim"]
] + [
    ("api::apps::v1", k, "apps/v1") for k in ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "ControllerRevision"]
] + [
    ("api::batch::v1", "Job", "batch/v1"),
    ("api::batch::v1", "CronJob", "batch/v1"),
    ("api::coordination::v1", "Lease", "coordination.k8s.io/v1"),
    ("api::discovery::v1", "EndpointSlice", "discovery.k8s.io/v1"),
    ("api::networking::v1", "Ingress", "networking.k8s.io/v1"),
    ("api::networking::v1", "IngressClass", "networking.k8s.io/v1"),
    ("api::policy::v1", "PodDisruptionBudget", "policy/v1"),
    ("api::scheduling::v1", "PriorityClass", "scheduling.k8s.io/v1"),
    ("api::storage::v1", "StorageClass", "storage.k8s.io/v1"),
    ("api::policy::v1", "Eviction", "policy/v1"),
    ("api::autoscaling::v1", "Scale", "autoscaling/v1"),
    ("api::autoscaling::v2", "HorizontalPodAutoscaler", "autoscaling/v2"),
    ("api::authentication::v1", "TokenRequest", "authentication.k8s.io/v1"),
    ("api::authentication::v1", "SelfSubjectReview", "authentication.k8s.io/v1"),
    ("api::authorization::v1", "SelfSubjectAccessReview", "authorization.k8s.io/v1"),
    ("api::authorization::v1", "SelfSubjectRulesReview", "authorization.k8s.io/v1"),
    ("apimachinery::pkg::apis::meta::v1", "DeleteOptions", "v1"),
]

STRUCT_RE = re.compile(r"^pub struct (\w+) \{$")
ATTR_RE = re.compile(r'^\s*#\[prost\((.*)\)\]\s*$')


def parse_pb():
    """module -> type -> [field]; field = dict(name, kind, label, target)."""
    types = {}
    for path in glob.glob(os.path.join(PB, "src", "**", "mod.rs"), recursive=True):
        rel = os.path.relpath(os.path.dirname(path), os.path.join(PB, "src"))
        module = "::".join(rel.split(os.sep))
        lines = open(path).read().split("\n")
        i = 0
        while i < len(lines):
            m = STRUCT_RE.match(lines[i])
            if not m:
                i += 1
                continue
            name, fields = m.group(1), []
            i += 1
            while lines[i] != "}":
                a = ATTR_RE.match(lines[i])
                if a:
                    attr = a.group(1)
                    j, decl = i + 1, ""
                    while lines[j].strip().startswith("///") or lines[j].strip().startswith("#["):
                        j += 1
                    while True:
                        decl += lines[j].strip() + " "
                        balanced = decl.count("<") == decl.count(">")
                        if balanced and lines[j].rstrip().endswith(","):
                            break
                        j += 1
                    fm = re.match(r"pub (r#)?(\w+):\s*(.*),\s*$", decl.strip())
                    fname, ftype = fm.group(2), fm.group(3)
                    fields.append(dict(name=fname, raw=fm.group(1) or "", attr=attr, ty=ftype))
                    i = j
                i += 1
            types.setdefault(module, {})[name] = fields
            i += 1
    return types


def resolve(module, ty):
    """The absolute module::Type of a (possibly super::-relative) Rust path, or None for scalars."""
    ty = ty.strip()
    for wrap in ["::core::option::Option<", "::prost::alloc::vec::Vec<"]:
        if ty.startswith(wrap):
            ty = ty[len(wrap):-1]
    ty = re.sub(r"\s+", "", ty).rstrip(",")
    for wrap in ["::core::option::Option<", "::prost::alloc::vec::Vec<"]:
        if ty.startswith(wrap):
            ty = ty[len(wrap):-1]
    if ty.startswith("::prost::alloc::collections::BTreeMap<"):
        inner = ty[len("::prost::alloc::collections::BTreeMap<"):-1]
        ty = inner.split(",", 1)[1].strip().rstrip(",")
    if ty.startswith("::prost") or ty in ("i32", "i64", "bool", "f64", "u32", "u64"):
        return None
    parts = ty.split("::")
    base = module.split("::")
    while parts and parts[0] == "super":
        parts.pop(0)
        base.pop()
    if len(parts) == 1:
        return "::".join(base + parts)
    return "::".join(base + parts)


def openapi_names():
    """Type name (with module) -> {rust_field: jsonName} from k8s-openapi's deserializers."""
    out = {}
    for path in glob.glob(os.path.join(OA, "**", "*.rs"), recursive=True):
        text = open(path).read()
        for m in re.finditer(r"pub struct (\w+) \{", text):
            rel = os.path.relpath(os.path.dirname(path), OA)
            module = "::".join(rel.split(os.sep))
            names = dict((r, j) for j, r in re.findall(r'"(\w+)" => Field::Key_(\w+),', text))
            # Keyed case-insensitively: k8s-pb spells PodDNSConfig as PodDnsConfig.
            out[(module + "::" + m.group(1)).lower()] = names
    return out


def snake_to_camel(s):
    head, *rest = s.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    pb = parse_pb()
    oa = openapi_names()

    def fields_of(full):
        module, name = full.rsplit("::", 1)
        return pb.get(module, {}).get(name)

    def norm(name):
        return name.replace("_", "").lower()

    def direct_names(full):
        return oa.get(full.lower(), {})

    def inlined(parent, field):
        """A field k8s-openapi does not name, whose message's fields the parent names: Go inlines it."""
        if field["name"] in direct_names(parent):
            return None
        target = resolve(parent.rsplit("::", 1)[0], field["ty"])
        child = fields_of(target) if target else None
        parent_names = {norm(j) for j in direct_names(parent).values()}
        # Newer protos may add fields the 1.33 types lack; most must match.
        matched = sum(1 for f in child or [] if norm(f["name"]) in parent_names)
        if child and parent_names and matched * 5 >= len(child) * 4:
            return target
        return None

    # Types with no k8s-openapi counterpart take the JSON names of the type inlining them.
    borrowed = {}
    for module, ts in pb.items():
        for tname, fs in ts.items():
            parent = module + "::" + tname
            for f in fs:
                child = inlined(parent, f)
                if child and not direct_names(child):
                    by_norm = {norm(j): j for j in direct_names(parent).values()}
                    borrowed[child] = {cf["name"]: by_norm[norm(cf["name"])] for cf in fields_of(child) if norm(cf["name"]) in by_norm}

    def json_names(full):
        names = dict(direct_names(full) or borrowed.get(full, {}))
        by_norm = {norm(r): j for r, j in names.items()}
        for f in fields_of(full) or []:
            if f["name"] not in names and norm(f["name"]) in by_norm:
                names[f["name"]] = by_norm[norm(f["name"])]
        return names

    seen, order, queue = set(), [], [m + "::" + k for m, k, _ in ROOTS]
    while queue:
        full = queue.pop(0)
        if full in seen or full in MANUAL:
            continue
        seen.add(full)
        fs = fields_of(full)
        if fs is None:
            sys.exit(f"no k8s-pb struct {full}")
        order.append(full)
        module = full.rsplit("::", 1)[0]
        for f in fs:
            if "message" in f["attr"] or "btree_map" in f["attr"] and "message" in f["attr"]:
                t = resolve(module, f["ty"])
                if t:
                    queue.append(t)
            elif "btree_map" in f["attr"]:
                t = resolve(module, f["ty"])
                if t and not t.startswith("::"):
                    queue.append(t)

    def rust_path(full):
        return "k8s_pb::" + full

    out = [
        "//! Generated by tools/gen_protobuf_json.py from k8s-pb and k8s-openapi; do not edit.",
        "//! JSON for the protobuf messages request bodies of the served kinds can contain.",
        "",
        "#![allow(clippy::all)]",
        "",
        "use serde_json::{Map, Value};",
        "",
        "use super::{ToJson, bytes_json, put};",
        "",
    ]
    fallbacks = []
    for full in order:
        fs = fields_of(full)
        names = json_names(full)
        module = full.rsplit("::", 1)[0]
        out.append(f"impl ToJson for {rust_path(full)} {{")
        out.append("    fn to_json(&self) -> Value {")
        out.append("        let mut m = Map::new();")
        for f in fs:
            fname = f["raw"] + f["name"]
            attr = f["attr"]
            json = names.get(f["name"])
            inline = json is None and inlined(full, f) is not None
            if json is None and not inline:
                json = snake_to_camel(f["name"])
                fallbacks.append(f"{full}.{f['name']} -> {json}")
            repeated = "repeated" in attr
            is_map = "btree_map" in attr
            is_bytes = attr.startswith("bytes")
            is_message = attr.startswith("message")
            if inline:
                out.append(f"        if let Some(v) = &self.{fname} {{ if let Value::Object(inner) = v.to_json() {{ m.extend(inner); }} }}")
            elif is_map:
                value_bytes = '"string, bytes' in attr
                conv = "bytes_json(v)" if value_bytes else "v.to_json()"
                out.append(f"        if !self.{fname}.is_empty() {{ m.insert(\"{json}\".into(), Value::Object(self.{fname}.iter().map(|(k, v)| (k.clone(), {conv})).collect())); }}")
            elif repeated:
                conv = "bytes_json(v)" if is_bytes else "v.to_json()"
                out.append(f"        if !self.{fname}.is_empty() {{ m.insert(\"{json}\".into(), Value::Array(self.{fname}.iter().map(|v| {conv}).collect())); }}")
            elif is_bytes:
                out.append(f"        if let Some(v) = &self.{fname} {{ m.insert(\"{json}\".into(), bytes_json(v)); }}")
            elif is_message or attr.startswith("string"):
                out.append(f"        if let Some(v) = &self.{fname} {{ put(&mut m, \"{json}\", v.to_json()); }}")
            else:
                out.append(f"        if let Some(v) = self.{fname} {{ m.insert(\"{json}\".into(), v.into()); }}")
        out.append("        Value::Object(m)")
        out.append("    }")
        out.append("}")
        out.append("")
    out.append("/// Decodes the object in `raw` when (`api_version`, `kind`) is one a body may hold.")
    out.append("pub fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, prost::DecodeError>> {")
    out.append("    use prost::Message;")
    out.append("    Some(match (api_version, kind) {")
    for module, kind, api_version in ROOTS:
        out.append(f"        (\"{api_version}\", \"{kind}\") => {rust_path(module + '::' + kind)}::decode(raw).map(|o| o.to_json()),")
    out.append("        _ => return None,")
    out.append("    })")
    out.append("}")
    os.makedirs("apiserver/src/protobuf", exist_ok=True)
    open("apiserver/src/protobuf/generated.rs", "w").write("\n".join(out) + "\n")
    print(f"{len(order)} message types", file=sys.stderr)
    if fallbacks and "-v" in sys.argv:
        print("JSON names not found in k8s-openapi (camelCase assumed):", *fallbacks, sep="\n  ", file=sys.stderr)


if __name__ == "__main__":
    main()
