"""The other half of the OpenAPI check: every status an operation documents, and every field a response
schema documents, must have been seen in some response of the test suite (the suite's harness checks each
response against the document and logs what it saw to $CLARESIA_CONTRACT_LOG). A status or field only
the document has fails here, so the document cannot promise what the code does not do.

Usage: contract_coverage.py OPENAPI_YAML LOG_DIR
"""

import glob
import json
import os
import sys

import yaml

# What the suite cannot make the handlers answer through a response it reads, with why. Each entry is
# (operation or "*", status or field location).
EXEMPT = {
    # Only a store failure after the authorization read reaches it; the suite injects those as crashes
    # (the function dies), which is what they are in Lambda, so no test reads a 500 body.
    ("*", "500"): "internal_error needs the store to fail mid-request",
}


def resolve(doc, node):
    ref = node.get("$ref") if isinstance(node, dict) else None
    if ref:
        target = doc
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return target, ref.rsplit("/", 1)[-1]
    return node, None


def fields(doc, schema, loc, out, stack=()):
    """Every property location a value of `schema` can show, named like the Rust validator names them."""
    schema, name = resolve(doc, schema)
    if name:
        if name in stack:
            return
        stack = stack + (name,)
        loc = name
    for branch in schema.get("oneOf", []):
        fields(doc, branch, loc, out, stack)
    if "items" in schema:
        fields(doc, schema["items"], f"{loc}[]", out, stack)
    for k, sub in (schema.get("properties") or {}).items():
        out.add(f"{loc}.{k}")
        fields(doc, sub, f"{loc}.{k}", out, stack)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        fields(doc, extra, f"{loc}{{}}", out, stack)


def main():
    doc = yaml.safe_load(open(sys.argv[1]))
    seen_status, seen_fields = set(), set()
    files = glob.glob(os.path.join(sys.argv[2], "*.jsonl"))
    if not files:
        sys.exit("contract coverage: no responses were logged (is CLARESIA_CONTRACT_LOG set for cargo test?)")
    for f in files:
        for line in open(f):
            r = json.loads(line)
            seen_status.add((r["op"], str(r["status"])))
            seen_fields.update(r["fields"])
    missing_status, missing_fields, documented_fields = [], set(), set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            key = f"{method.upper()} {path}"
            for status, response in op["responses"].items():
                if ("*", status) in EXEMPT or (key, status) in EXEMPT:
                    continue
                if (key, status) not in seen_status:
                    missing_status.append(f"{key} -> {status}")
                response, _ = resolve(doc, response)
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema:
                    fields(doc, schema, "", documented_fields)
    # The gateway's own 401 body is API Gateway's, not the handlers'.
    documented_fields.discard("GatewayUnauthorized.message")
    for f in sorted(documented_fields):
        if f not in seen_fields and ("*", f) not in EXEMPT:
            missing_fields.add(f)
    print(
        f"contract coverage: {len(seen_status)} (operation, status) pairs and {len(seen_fields & documented_fields)}"
        f"/{len(documented_fields)} documented fields seen in {len(files)} test binaries' responses"
    )
    for what, items in (("status never answered", missing_status), ("field never present", sorted(missing_fields))):
        for i in items:
            print(f"  documented but never seen ({what}): {i}")
    if missing_status or missing_fields:
        sys.exit("contract coverage: the document claims what no test saw; add a test or fix the document")


if __name__ == "__main__":
    main()
