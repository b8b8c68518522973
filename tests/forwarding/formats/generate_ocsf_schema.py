"""Generate tests/forwarding/formats/ocsf_schema.json from a clone of ocsf/ocsf-schema at
tag 1.3.0 (not run by the tests):

    python tests/forwarding/formats/generate_ocsf_schema.py /path/to/ocsf-schema > \
        tests/forwarding/formats/ocsf_schema.json
"""

import json
import subprocess
import sys

REPO = sys.argv[1] if len(sys.argv) > 1 else "ocsf-schema"
TAG = "1.3.0"


def load(path):
    return json.loads(
        subprocess.run(
            ["git", "-C", REPO, "show", f"{TAG}:{path}"], capture_output=True, check=True
        ).stdout
    )


dictionary = load("dictionary.json")["attributes"]
categories = {k: v["uid"] for k, v in load("categories.json")["attributes"].items()}


def attrs_of(doc, base_dir):
    out = {}
    for k, v in doc.get("attributes", {}).items():
        if k == "$include":
            for inc in v:
                got = attrs_of(load(inc), None)
                if inc.startswith("profiles/"):
                    prof = inc.split("/")[-1][:-5]
                    got = {kk: dict(vv, profile=prof) for kk, vv in got.items()}
                out.update(got)
            continue
        out[k] = v
    return out


def merge(dst, src):
    for k, v in src.items():
        d = dict(dst.get(k, {}))
        d.update({kk: vv for kk, vv in v.items() if vv is not None or kk == "profile"})
        dst[k] = d


def resolve_event(path, paths):
    doc = load(path)
    ext = doc.get("extends")
    res, cat = {}, doc.get("category")
    cons = {}
    if ext:
        res, cat2, cons = resolve_event(paths[ext], paths)
        cat = cat or cat2
    merge(res, attrs_of(doc, None))
    cons.update(doc.get("constraints", {}))
    return res, cat, cons


paths = {
    "base_event": "events/base_event.json",
    "iam": "events/iam/iam.json",
    "application": "events/application/application.json",
}
classes = {
    "authentication": "events/iam/authentication.json",
    "account_change": "events/iam/account_change.json",
    "user_access": "events/iam/user_access.json",
    "entity_management": "events/iam/entity_management.json",
    "api_activity": "events/application/api.json",
}


def enum_of(name, spec):
    e = dict(dictionary.get(name, {}).get("enum", {}))
    e.update(spec.get("enum", {}))
    return (
        {
            k: v["caption"]
            for k, v in sorted(e.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0])
        }
        if e
        else None
    )


def describe(attrs):
    out = {}
    for k, spec in sorted(attrs.items()):
        d = dictionary.get(k, {})
        item = {
            "requirement": spec.get("requirement") or d.get("requirement") or "optional",
            "type": spec.get("type") or d.get("type"),
        }
        if d.get("is_array"):
            item["is_array"] = True
        if spec.get("profile"):
            item["profile"] = spec["profile"]
            item["requirement"] = (
                "optional" if item["requirement"] == "required" else item["requirement"]
            )
        en = enum_of(k, spec)
        # category_uid/class_uid carry a placeholder enum ({0: Unknown}); checked per class.
        if (
            en
            and item["type"] in ("integer_t", "long_t")
            and k not in ("category_uid", "class_uid")
        ):
            item["enum"] = en
        out[k] = item
    return out


result = {
    "_about": (
        "Required attributes, types and enums of five OCSF classes and the objects our "
        f"mapping uses, from github.com/ocsf/ocsf-schema at tag {TAG} (dictionary.json, "
        "categories.json, events/, objects/, includes/; profiles' attributes included as "
        "allowed). Written by tests/forwarding/formats/generate_ocsf_schema.py; the tests "
        "read it, nothing fetches it at run time."
    ),
    "version": TAG,
    "categories": categories,
    "classes": {},
    "objects": {},
}
for name, path in classes.items():
    attrs, cat, cons = resolve_event(path, paths)
    doc = load(path)
    uid = categories[cat] * 1000 + doc["uid"]
    result["classes"][str(uid)] = {
        "name": name,
        "caption": doc["caption"],
        "category": cat,
        "category_uid": categories[cat],
        "attributes": describe(attrs),
        "constraints": cons,
    }


def resolve_object(name):
    doc = load(f"objects/{name}.json")
    res, cons = {}, {}
    if doc.get("extends") not in (None, "object"):
        res, cons = resolve_object(doc["extends"])
    merge(res, attrs_of(doc, None))
    cons = dict(cons)
    cons.update(doc.get("constraints", {}))
    return res, cons


for name in [
    "metadata",
    "product",
    "user",
    "actor",
    "network_endpoint",
    "api",
    "http_request",
    "service",
    "managed_entity",
    "request",
    "response",
    "account",
    "session",
    "url",
    "resource_details",
]:
    attrs, cons = resolve_object(name)
    result["objects"][name] = {"attributes": describe(attrs), "constraints": cons}
json.dump(result, sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
print()
