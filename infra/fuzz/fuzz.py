"""The API fuzz run: schemathesis-generated requests against the dev gateway (the same JWT verification as
API Gateway), with a real token, over every operation of lib/api/openapi.yaml.

Starts `claresia-dev` itself on free ports (its own moto and simulator), connects the demo tenant and
loads a small catalog so requests reach real work, then per operation draws schema-valid requests on the
token's tenant, schema-violating ones, and ones on other tenants. Every answer must:
  - not be a 5xx;
  - be a documented status with a body and headers matching the document (schemathesis' checks);
  - on 4xx, carry the error envelope with a documented `code`;
  - on 4xx, have left nothing behind: every item of every DynamoDB table, every secret (with its
    versions and deletion date) and the simulator's count of write requests are the same after it as
    before it.
Prints the number of requests, the seed and the time taken; exits non-zero naming each failure.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

import boto3
import hypothesis
import requests
from hypothesis import HealthCheck, given, settings
from schemathesis import openapi
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "lib", "api", "openapi.yaml")
TENANT = "dainese"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev(binary, tick=86400):
    """Starts claresia-dev on free ports; answers (process, urls, tokens, good key, banner) once it is
    ready. The default tick never comes during a fuzz run: the store changes only by its requests."""
    ports = {k: free_port() for k in ("api", "sim", "moto")}
    env = dict(
        os.environ,
        CLARESIA_API_ADDR=f"127.0.0.1:{ports['api']}",
        CLARESIA_SIM_ADDR=f"127.0.0.1:{ports['sim']}",
        CLARESIA_MOTO_PORT=str(ports["moto"]),
        CLARESIA_TICK_SECONDS=str(tick),
        RUST_LOG="warn",
    )
    proc = subprocess.Popen(
        [binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    banner = []
    deadline = time.time() + 120
    for line in proc.stdout:
        banner.append(line)
        if "Ctrl-C stops everything" in line:
            break
        if time.time() > deadline:
            break
    text = "".join(banner)
    found = dict(re.findall(r"export (\w+)=(\S+)", text))
    good = re.search(r"good\s+(sk-ant-\S+)", text)
    if proc.poll() is not None or "TOKEN" not in found or not good:
        proc.kill()
        sys.exit(f"claresia-dev did not start:\n{text}")
    urls = {
        "api": f"http://127.0.0.1:{ports['api']}",
        "sim": f"http://127.0.0.1:{ports['sim']}",
        "moto": f"http://127.0.0.1:{ports['moto']}",
    }
    return proc, urls, found, good.group(1), text


def stop_dev(proc):
    """Stops claresia-dev (and with it its moto and simulator)."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


class Footprint:
    """Everything a request could write: DynamoDB items, secrets, the simulator's write requests."""

    def __init__(self, urls):
        kw = dict(
            endpoint_url=urls["moto"],
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.dynamo = boto3.client("dynamodb", **kw)
        self.secrets = boto3.client("secretsmanager", **kw)
        self.sim = urls["sim"]
        self.tables = self.dynamo.list_tables()["TableNames"]

    def take(self):
        parts = {}
        for t in self.tables:
            items, start = [], None
            while True:
                kw = {"TableName": t, **({"ExclusiveStartKey": start} if start else {})}
                page = self.dynamo.scan(**kw)
                items.extend(json.dumps(i, sort_keys=True) for i in page["Items"])
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
            parts[t] = sorted(items)
        secrets = []
        for s in self.secrets.list_secrets(IncludePlannedDeletion=True)["SecretList"]:
            versions = self.secrets.list_secret_version_ids(
                SecretId=s["ARN"], IncludeDeprecated=True
            )["Versions"]
            secrets.append(
                (s["Name"], str(s.get("DeletedDate")), sorted(v["VersionId"] for v in versions))
            )
        parts["secrets"] = sorted(map(str, secrets))
        received = requests.get(f"{self.sim}/_sim/requests", timeout=10).json()["requests"]
        parts["anthropic_writes"] = sum(1 for r in received if r["method"] != "GET")
        return parts

    @staticmethod
    def diff(before, after):
        out = []
        for k in sorted(set(before) | set(after)):
            if before.get(k) != after.get(k):
                if isinstance(before.get(k), list):
                    added = set(after.get(k, [])) - set(before.get(k, []))
                    removed = set(before.get(k, [])) - set(after.get(k, []))
                    out.append(f"{k}: +{sorted(added)[:3]} -{sorted(removed)[:3]}")
                else:
                    out.append(f"{k}: {before.get(k)} -> {after.get(k)}")
        return out


def seed_world(urls, token, good_key):
    """The demo tenant connected, with a skill and an archetype, so catalog requests do real work."""
    h = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    api = urls["api"] + f"/tenants/{TENANT}"
    skill = json.load(open(os.path.join(ROOT, "lib/domain/tests/fixtures/examples/skill-incident-postmortem.json")))
    for method, path, body in [
        ("PUT", "/connection", {"admin_api_key": good_key}),
        ("PUT", "/skills/incident-postmortem", skill),
        ("PUT", "/archetypes/engineer", {"skills": ["incident-postmortem"], "group_ids": ["grp_engineering"]}),
        ("PUT", "/sub-tenants/dainese-eng", {}),
    ]:
        r = requests.request(method, api + path, headers=h, json=body, timeout=30)
        if r.status_code >= 300:
            sys.exit(f"fuzz: seeding {method} {path} failed: {r.status_code} {r.text}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev-binary", default=os.path.join(ROOT, "target/debug/claresia-dev"))
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--positive", type=int, default=50, help="examples per operation on the token's tenant")
    ap.add_argument("--negative", type=int, default=40, help="schema-violating examples per operation")
    ap.add_argument("--foreign", type=int, default=10, help="examples per operation on generated tenants")
    ap.add_argument("--min-requests", type=int, default=1000)
    args = ap.parse_args()

    started = time.time()
    proc, urls, tokens, good_key, _ = start_dev(args.dev_binary)
    try:
        run(args, urls, tokens, good_key, started)
    finally:
        stop_dev(proc)


def run(args, urls, tokens, good_key, started):
    token = tokens["TOKEN"]
    seed_world(urls, token, good_key)
    footprint = Footprint(urls)
    schema = openapi.from_path(DOC)
    codes = set(schema.raw_schema["components"]["schemas"]["ErrorCode"]["enum"])
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    stats = {"requests": 0, "refused": 0, "by_status": {}}
    failures = []
    state = {"last": footprint.take()}

    def exercise(case):
        response = case.call(base_url=urls["api"], session=session, headers=auth, timeout=60)
        stats["requests"] += 1
        status = response.status_code
        stats["by_status"][status] = stats["by_status"].get(status, 0) + 1
        label = f"{case.method} {case.formatted_path} {case.query or ''} -> {status}"
        problems = []
        try:
            case.validate_response(response, checks=checks, headers=auth)
        except BaseExceptionGroup as e:  # schemathesis raises the failed checks as a group
            problems.extend(str(x).strip().splitlines()[0] for x in e.exceptions)
        except AssertionError as e:
            problems.append(str(e).strip().splitlines()[0])
        after = footprint.take()
        if 400 <= status < 500:
            stats["refused"] += 1
            try:
                code = response.json()["error"]["code"]
                if code not in codes:
                    problems.append(f"undocumented code {code!r}")
            except Exception:
                # API Gateway's own 401 body has no envelope (documented).
                if status != 401:
                    problems.append(f"no error envelope: {response.text[:200]}")
            changed = Footprint.diff(state["last"], after)
            if changed:
                problems.append(f"a refused request left writes behind: {changed}")
        state["last"] = after
        if problems:
            failures.append((label, case.body if case.body is not None else None, problems))

    ops = [r.ok() for r in schema.get_all_operations()]
    plans = [
        ("positive", GenerationMode.POSITIVE, {"tenant": TENANT}, args.positive),
        ("negative", GenerationMode.NEGATIVE, {"tenant": TENANT}, args.negative),
        ("foreign", GenerationMode.POSITIVE, None, args.foreign),
    ]
    for op in ops:
        for name, mode, fixed, n in plans:
            if n <= 0:
                continue
            kw = {"generation_mode": mode}
            if fixed is not None:
                kw["path_parameters"] = fixed
            try:
                strategy = op.as_strategy(**kw)
            except Exception as e:  # e.g. nothing can be made invalid for this operation
                print(f"  {op.method.upper()} {op.path} [{name}]: no strategy ({e})")
                continue

            @hypothesis.seed(args.seed)
            @settings(
                max_examples=n,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @given(strategy)
            def test(case):
                exercise(case)

            test()
    elapsed = time.time() - started
    print(
        f"fuzz: {stats['requests']} requests ({stats['refused']} refused with 4xx) over {len(ops)} operations, "
        f"seed {args.seed}, in {elapsed:.0f} s; statuses {dict(sorted(stats['by_status'].items()))}"
    )
    if stats["requests"] < args.min_requests:
        failures.append(("run", None, [f"only {stats['requests']} requests; at least {args.min_requests} are required"]))
    if failures:
        for label, body, problems in failures[:30]:
            print(f"FAIL {label}\n  body: {json.dumps(body, default=str)[:300]}\n  " + "\n  ".join(map(str, problems)))
        sys.exit(f"fuzz: {len(failures)} failing request(s)")


if __name__ == "__main__":
    main()
