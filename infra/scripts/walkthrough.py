"""The README's walkthroughs, executed: every command of "Walkthrough (curl)" and of its Claude Enterprise
twin, pasted into one bash session as a newcomer would, against `claresia-dev` (started here on free ports,
with a short tick), each answer checked against the `→` comment that documents it.

What it takes from the README and the banner, and nothing else:
  - the two ```sh blocks, split into steps: a command (with its `\\` continuation lines) and the `→`
    comment that follows it, inline (`cmd   # → 403 forbidden`) or on the next comment lines;
  - the `export` lines `make dev` prints, pasted as printed (so they must be paste-safe), and their count,
    which must be the number the README states;
  - the README's own addresses (127.0.0.1:3000 for the API, 127.0.0.1:4010 for the simulator) become the
    free ports this run uses, and its one-tick waits (`sleep 65`) the short tick.

What a `→` comment promises, and so what is checked:
  - a leading status (`→ 403 …`): the HTTP status of the step's (last) curl;
  - an error code after the status (`→ 409 sub_tenant_shares_connection`): the answer's `error.code`;
  - every `"field":value` whose value is complete JSON (no `…`): some object of the answer has that field
    with that value;
  - every published name (`claresia-…`) it mentions: the answer contains it.
A `→` with nothing to check fails, so the README cannot drift into prose the test cannot hold it to. A step
without a `→` must exit 0 (a `grep` that finds nothing fails it) and get no 4xx or 5xx from the API.

Usage: walkthrough.py [--binary target/debug/claresia-dev] [--tick 2]
"""

import argparse
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fuzz"))
from fuzz import start_dev, stop_dev  # noqa: E402  (one way to run the dev stack on free ports)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")
SECTIONS = ["## Walkthrough (curl)", "### The same with a Claude Enterprise key"]
README_API = "http://127.0.0.1:3000"
README_SIM = "http://127.0.0.1:4010"
COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def blocks(text):
    """The first ```sh block after each walkthrough heading."""
    out = []
    for heading in SECTIONS:
        start = text.index(heading)
        body = text.index("```sh\n", start) + len("```sh\n")
        out.append((heading, text[body : text.index("```", body)]))
    return out


def steps(block):
    """(command, arrow text or None, line number in the block) for every command of a block."""
    lines = block.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        first = i + 1
        command = [line]
        while command[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        arrow = None
        last = command[-1]
        inline = re.search(r"\s#\s(.*)$", last)
        if inline and "→" in inline.group(1):
            command[-1] = last[: inline.start()]
            arrow = inline.group(1).split("→", 1)[1]
        i += 1
        # `#   → …` on the next lines, with its continuation lines (`#      …`), up to a blank or a step.
        if i < len(lines) and re.match(r"\s*#\s+→", lines[i]):
            arrow = lines[i].split("→", 1)[1]
            i += 1
            while i < len(lines) and re.match(r"\s*#\s{3,}\S", lines[i]) and "→" not in lines[i]:
                arrow += " " + lines[i].lstrip("# ").strip()
                i += 1
        out.append(("\n".join(command), arrow, first))
    return out


def json_values(text):
    """Every JSON document in a command's output (curl prints one; jq may print several)."""
    values, decoder, pos = [], json.JSONDecoder(), 0
    text = text.strip()
    while pos < len(text):
        while pos < len(text) and text[pos] in " \n\r\t,":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            break
        values.append(value)
        pos = end
    return values


def has_field(value, key, want):
    if isinstance(value, dict):
        if key in value and value[key] == want:
            return True
        return any(has_field(v, key, want) for v in value.values())
    if isinstance(value, list):
        return any(has_field(v, key, want) for v in value)
    return False


def complete_json_values(arrow):
    """`"field": value` pairs of the arrow whose value is complete JSON (a `…` means "and more")."""
    pairs, decoder = [], json.JSONDecoder()
    for m in re.finditer(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*', arrow):
        try:
            value, end = decoder.raw_decode(arrow, m.end())
        except ValueError:
            continue
        if "…" not in json.dumps(value, ensure_ascii=False):
            pairs.append((m.group(1), value))
    return pairs


def checks(arrow):
    """What an arrow promises: [(description, predicate(status, output, values))]."""
    out = []
    text = arrow.strip()
    head = re.match(r"(\d{3})\b\s*([a-z][a-z0-9_]*[a-z0-9])?", text)
    if head:
        want = int(head.group(1))
        out.append((f"status {want}", lambda s, o, v, want=want: s == want))
        code = head.group(2)
        if code and "_" in code or code in ("unauthorized", "forbidden", "conflict"):
            out.append(
                (
                    f"error.code {code}",
                    lambda s, o, v, code=code: any(
                        isinstance(x, dict) and (x.get("error") or {}).get("code") == code
                        for x in v
                    ),
                )
            )
    for key, want in complete_json_values(text):
        out.append(
            (
                f'"{key}": {json.dumps(want, ensure_ascii=False)}',
                lambda s, o, v, key=key, want=want: any(has_field(x, key, want) for x in v),
            )
        )
    for name in set(re.findall(r"claresia-[a-z0-9-]*[a-z0-9]", text)):
        out.append((f"mentions {name}", lambda s, o, v, name=name: name in o))
    return out


class Shell:
    """One bash session, as a newcomer's terminal: variables carry from step to step."""

    def __init__(self, env):
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
        # The session's output, line by line, read on a thread so a step that hangs cannot hang the run.
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.headers = tempfile.NamedTemporaryFile(delete=False).name
        # curl as typed, with the response headers kept aside for the status check.
        self.run(f'curl() {{ command curl -D {shlex.quote(self.headers)} "$@"; }}')

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def run(self, command, timeout=120):
        marker = f"__step_done_{time.time_ns()}__"
        open(self.headers, "w").close()
        self.proc.stdin.write(f"{command}\necho; echo {marker} $?\n")
        self.proc.stdin.flush()
        lines, deadline = [], time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                raise RuntimeError(f"no answer within {timeout} s from: {command}") from None
            if line.startswith(marker):
                status_lines = [
                    l for l in open(self.headers).read().splitlines() if l.startswith("HTTP/")
                ]
                http = int(status_lines[-1].split()[1]) if status_lines else None
                return int(line.split()[1]), http, "".join(lines).rstrip("\n")
            lines.append(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "claresia-dev"))
    ap.add_argument("--tick", type=int, default=2)
    args = ap.parse_args()
    readme = open(README).read()
    started = time.time()
    proc, urls, _, _, banner = start_dev(args.binary, args.tick)
    failures, ran, checked = [], 0, 0
    try:
        exports = [l for l in banner.splitlines() if l.startswith("export ")]
        said = re.search(r"paste the (\w+) `export` lines", readme)
        if not said or COUNT_WORDS.get(said.group(1)) != len(exports):
            failures.append(
                f"the README says to paste the {said and said.group(1)} `export` lines; make dev printed {len(exports)}"
            )
        api, sim = urls["api"], urls["sim"]
        shell = Shell(dict(os.environ))
        code, _, out = shell.run("set -u\n" + "\n".join(exports) + "\nset +u")
        if code != 0 or out.strip():
            failures.append(f"the banner's export lines are not paste-safe: {out}")
        for heading, block in blocks(readme):
            for command, arrow, line in steps(block):
                typed = command.replace(README_API, api).replace(README_SIM, sim)
                # A few ticks: a loaded machine runs a tick's poll and sweep slower than the tick itself.
                typed = re.sub(r"\bsleep \d+\b", f"sleep {args.tick * 5 + 1}", typed)
                code, http, out = shell.run(typed)
                ran += 1
                where = f"{heading} (block line {line}): {command.splitlines()[0].strip()}"
                if arrow is None:
                    # Undocumented, so it must simply work: exit 0, and no refusal from the API.
                    if code != 0 or (http or 0) >= 400:
                        failures.append(f"{where}\n  exited {code}, HTTP {http}: {out[:500]}")
                    continue
                promised = checks(arrow)
                if not promised:
                    failures.append(f"{where}\n  its → names nothing to check: {arrow.strip()}")
                    continue
                values = json_values(out)
                broken = [d for d, ok in promised if not ok(http, out, values)]
                checked += len(promised)
                if code != 0 or broken:
                    failures.append(
                        f"{where}\n  → {arrow.strip()}\n  got HTTP {http}, exit {code}; not as documented: {broken}\n  {out[:800]}"
                    )
    finally:
        stop_dev(proc)
    took = time.time() - started
    if failures:
        print(f"walkthrough: {len(failures)} step(s) do not answer as the README says:")
        for f in failures:
            print("- " + f)
        print(f"walkthrough: {ran - len(failures)} passed, {len(failures)} failed")
        sys.exit(1)
    print(
        f"walkthrough: {ran} README commands run as printed, {checked} documented answers checked, in {took:.0f} s"
    )
    print(f"walkthrough: {ran} passed, 0 failed")


if __name__ == "__main__":
    main()
