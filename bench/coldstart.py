"""Cold start of every Lambda handler module in template.yaml, next to a bare boto3 client.

Each run is a fresh interpreter (`python -c`, no `-X importtime`); the child times itself with
time.perf_counter, after interpreter startup, and prints its figures as JSON. Per run:

    import       importlib.import_module(<handler module>)   (what the Lambda INIT phase runs)
    +context     the Context the handler builds on its first request (core.aws.context.build_context
                 through the handler's own cache: DynamoDB and SQS clients, no request made;
                 JWT_SECRET is set, so no SSM); none for handlers.docs, whose routes never
                 build one
    +first call  the handler invoked once with an event that needs no AWS request (an
                 unauthenticated or unknown route: 401/404; GET /openapi.json for the docs;
                 an SQS record the dispatcher ignores), so Mangum, Starlette and Powertools do
                 their first-call work
    +SSM         core.aws.context.ssm_provider().get(<parameter>, decrypt=True): the Powertools
                 SSMProvider on the default boto3 session that production reads the secret with
                 on the first authenticated request (template.yaml sets JWT_SECRET_PARAMETER,
                 not JWT_SECRET), and the GetParameter call itself, answered by a stub on
                 loopback (AWS_ENDPOINT_URL_SSM): the request's signing, sending and parsing are
                 in the figure, the network's round trip to SSM in a region (a few ms) is not

Untimed, after those: compiling the sources of our own modules that were loaded (what an
import without bytecode does for each), to show what precompiling them would save.

The baseline, in its own fresh interpreter in the same run (interleaved with the modules):
`import boto3; boto3.client("dynamodb", region_name="us-east-1")`. Columns are cumulative;
"x" is the median over the baseline's median, "+ms" the median's overhead over it in
milliseconds (what a cold start costs in absolute terms, which a ratio hides). Target (issue 5):
every handler at most 1.5 x.

Variants (how the child's interpreter finds code):
    package      as `sam build` packages it: `python -S` (no site-packages), with PYTHONPATH a
                 directory holding only the runtime closure of taskgate[aws] (links, with the
                 bytecode pip compiled) and a copy of core/ and handlers/ without bytecode, so
                 our modules are compiled at every start, as in /var/task (read-only)
    precompiled  the same with bytecode for our own modules too (PYTHONPYCACHEPREFIX, written
                 by an untimed first round): what `python -m compileall` in the build gives
    venv         this venv's site-packages as they are (dev tools, cryptography included), the
                 same copy of our code

Then one `-X importtime` run per module (first variant) shows what the time goes to: the top
10 cumulative imports of the slowest handler, and self time by package.

    python -m bench.coldstart [--runs 15] [--variants package,precompiled,venv]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import percentile
from tests.support.aws import load_template

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
BASELINE = "boto3"
BOTOCORE = "botocore"  # a reference: the same client without boto3
TARGET_RATIO = 1.5
MARK = "--- coldstart: timed part starts ---"
PHASES = ("import", "context", "first_call", "ssm")
LABELS = {"import": "import", "context": "+context", "first_call": "+first call", "ssm": "+SSM"}

# Runs in the fresh interpreter. Argument: the run's settings as JSON.
CHILD = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
os.write(2, (cfg["mark"] + "\n").encode())
clock = time.perf_counter
out = {}
t0 = clock()
if cfg["target"] == "boto3":
    import boto3
    t1 = clock()
    boto3.client("dynamodb", region_name="us-east-1")
    t2 = clock()
    # References for what a handler adds, after the baseline figure is taken:
    boto3.client("sqs", region_name="us-east-1")
    t3 = clock()
    boto3.client("ssm", region_name="us-east-1")
    t4 = clock()
    from aws_lambda_powertools.utilities import parameters
    parameters.SSMProvider()
    t5 = clock()
    out = {
        "import_boto3": t1 - t0, "client": t2 - t1, "total": t2 - t0, "sqs": t3 - t2,
        "ssm_same_session": t4 - t3, "ssm_powertools": t5 - t4,
    }
elif cfg["target"] == "botocore":
    import botocore.session
    session = botocore.session.get_session()
    session.create_client("dynamodb", region_name="us-east-1")
    t1 = clock()
    session.create_client("sqs", region_name="us-east-1")
    t2 = clock()
    out = {"total": t1 - t0, "sqs": t2 - t1}
else:
    import importlib
    from types import SimpleNamespace
    if cfg["importtime"]:  # -X importtime sees the import statement, not import_module
        __import__(cfg["target"])
        module = sys.modules[cfg["target"]]
    else:
        module = importlib.import_module(cfg["target"])
    t1 = clock()
    app = getattr(module, "app", None)
    if not cfg["context"]:
        pass
    elif app is not None:
        app.state.context = app.state.context_source()
    elif hasattr(module, "push"):  # the WebSocket function: its Context sits in its LazyPush
        module.push.context()
    else:
        module.context()
    t2 = clock()
    status = None
    if cfg["event"] is not None:
        lambda_context = SimpleNamespace(
            function_name="coldstart", function_version="$LATEST", memory_limit_in_mb=512,
            invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:coldstart",
            aws_request_id="00000000-0000-4000-8000-000000000000",
            log_group_name="/aws/lambda/coldstart", log_stream_name="coldstart",
            get_remaining_time_in_millis=lambda: 29_000,
        )
        response = module.handler(cfg["event"], lambda_context)
        status = response.get("statusCode", response.get("batchItemFailures"))
    t3 = clock()
    if cfg["ssm"]:  # what core.aws.context reads the secret with: one provider on the shared session
        from core.aws.context import ssm_provider
        secret = ssm_provider().get(cfg["ssm_parameter"], decrypt=True)
        assert secret == "coldstart-secret-from-ssm", secret
    t4 = clock()
    out = {"import": t1 - t0, "context": t2 - t1, "first_call": t3 - t2, "ssm": t4 - t3, "status": status}
    # Untimed above: what compiling our own modules' sources costs (an import without bytecode
    # does this; with bytecode it reads the .pyc instead).
    root, ours = os.getcwd(), []
    for loaded in list(sys.modules.values()):
        path = os.path.abspath(getattr(loaded, "__file__", None) or "/")
        if path.startswith(root + os.sep) and path.endswith(".py"):
            ours.append(path)
    c0 = clock()
    for path in ours:
        with open(path, "rb") as source:
            compile(source.read(), path, "exec", dont_inherit=True)
    out["compile"] = clock() - c0
    out["first_party"] = len(ours)
out["cryptography"] = "cryptography" in sys.modules
print(json.dumps(out))
"""


# -- what is measured --------------------------------------------------------------------------


# Handlers whose routes never build the Context (their first request does not either).
NO_CONTEXT = {"handlers.docs"}


def handler_modules() -> dict[str, bool]:
    """The module of every function's Handler in template.yaml, in template order, and
    whether its first request reads the JWT secret (every one that builds the Context)."""
    found: dict[str, bool] = {}
    for resource in load_template()["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            module = resource["Properties"]["Handler"].rpartition(".")[0]
            found[module] = module not in NO_CONTEXT
    return found


SSM_PARAMETER = "/taskgate/jwt-secret"


class SsmStub:
    """GetParameter on loopback: what SSM answers, without the network."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps(
                    {
                        "Parameter": {
                            "Name": request["Name"],
                            "Type": "SecureString",
                            "Value": "coldstart-secret-from-ssm",
                            "Version": 1,
                            "DataType": "text",
                        }
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


_ssm_stub: SsmStub | None = None


def ssm_stub() -> SsmStub:
    global _ssm_stub
    if _ssm_stub is None:
        _ssm_stub = SsmStub()
    return _ssm_stub


def child_env() -> dict[str, str]:
    """The template's literal Globals variables, dummies for the rest, fake credentials; no
    user AWS config (a Lambda has none), no endpoint override (it would skip work)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "JWT_SECRET_PARAMETER"}
    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    env |= {name: value for name, value in variables.items() if isinstance(value, str | int)}
    env.pop("JWT_SECRET_PARAMETER", None)
    env |= {
        "TABLE_NAME": "taskgate-Table-coldstart",
        "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/taskgate-TaskQueue-coldstart",
        "JWT_SECRET": "coldstart-secret-" * 3,
        "MAX_ATTEMPTS": "3",
        "TASK_TTL_DAYS": "7",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONHASHSEED": "0",
        # SSM only: the +SSM phase's GetParameter goes to the stub (the other clients make no call).
        "AWS_ENDPOINT_URL_SSM": ssm_stub().url,
    }
    return env


def http_probe(method: str, path: str) -> dict[str, Any]:
    """events/api-health.json re-aimed at `path`, without a token."""
    event: dict[str, Any] = json.loads((EVENTS / "api-health.json").read_text())
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"].pop("authorization", None)
    return event


def first_call(module: str) -> tuple[dict[str, Any] | None, str]:
    """An event for a first invocation that makes no AWS request, and what it is."""
    authenticated = {
        "handlers.tasks": "/api/task/coldstart",
        "handlers.servers": "/api/servers",
        "handlers.stats": "/api/stats/tasks",
    }
    if module in authenticated:
        return http_probe("GET", authenticated[module]), f"GET {authenticated[module]}, no token (401)"
    if module == "handlers.docs":
        return http_probe("GET", "/openapi.json"), "GET /openapi.json (builds the document)"
    if module == "handlers.dispatcher":
        event: dict[str, Any] = json.loads((EVENTS / "sqs-dispatch.json").read_text())
        event["Records"][0]["body"] = json.dumps({"coldstartProbe": True})
        return event, "events/sqs-dispatch.json, a body it ignores"
    if module == "handlers.sweeper":
        return None, "none: every sweep reads DynamoDB"
    if module == "handlers.stats_stream":
        return {"Records": []}, "an empty stream batch"
    if module == "handlers.notifier":
        event = json.loads((EVENTS / "dynamodb-stream-task.json").read_text())
        for record in event["Records"]:
            record["eventName"] = "REMOVE"  # a TTL removal: nothing to post
        return event, "events/dynamodb-stream-task.json as a TTL removal"
    if module == "handlers.ws_api":
        event = json.loads((EVENTS / "ws-connect.json").read_text())
        event["queryStringParameters"] = {}
        return event, "events/ws-connect.json without its token (401)"
    return http_probe("GET", "/coldstart-probe"), "GET of an unknown path (404)"


LAYER_LOCK = ROOT / "deploy" / "layer" / "requirements.txt"


def runtime_closure() -> tuple[set[str], str]:
    """The distributions in the Lambda package, and where that list comes from: the layer's
    lock file when there is one, else pyproject.toml's dependencies and aws extra with what
    the installed distributions require (markers evaluated here)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    if LAYER_LOCK.is_file():
        lines = (line.split("#", 1)[0].strip() for line in LAYER_LOCK.read_text().splitlines())
        return {canonicalize_name(Requirement(line).name) for line in lines if line}, str(
            LAYER_LOCK.relative_to(ROOT)
        )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    closure: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [
        Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["aws"]]
    ]
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        closure.add(name)
        for text in dist.requires or []:
            needed = Requirement(text)
            marker = needed.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                todo.append(needed)
    return closure, "pyproject.toml: dependencies + [aws], and what they require"


def lambda_package(into: Path) -> list[str]:
    """Lay out `into` like the dependency part of a Lambda package: a link to each top-level
    module, package and .dist-info of the runtime closure (with the bytecode pip compiled for
    them), and nothing else. Returns the distributions."""
    found, source = runtime_closure()
    closure = sorted(found)
    cache = into / "__pycache__"
    cache.mkdir(parents=True)
    for name in closure:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            link = into / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))))
            if top.endswith(".py"):
                compiled = Path(str(dist.locate_file("__pycache__")))
                for pyc in compiled.glob(f"{top[:-3]}.*.pyc"):
                    if not (cache / pyc.name).exists():
                        (cache / pyc.name).symlink_to(pyc)
    return [*closure, f"(from {source})"]


def our_code(into: Path) -> None:
    """Our own packages as the Lambda package holds them: sources only (/var/task is
    read-only, so nothing is cached there at run time either)."""
    for package in ("core", "handlers"):
        shutil.copytree(ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__"))


def source_tree() -> str:
    """The commit measured, and whether the working tree differed from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "not a git checkout"
    changed = len(dirty.stdout.splitlines())
    return f"commit {head.stdout.strip()}" + (f" with {changed} changed or new files" if changed else "")


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...]
    env: dict[str, str]
    cwd: Path  # sys.path[0] of `python -c`


def variants(names: list[str], scratch: Path) -> tuple[list[Variant], list[str]]:
    """The child runs in `scratch/code`, a copy of our packages (so no bytecode another
    process left in the repository is read); `scratch/deps` holds the Lambda package's
    dependencies."""
    base = child_env()
    deps, code = scratch / "deps", scratch / "code"
    closure = lambda_package(deps)
    our_code(code)
    packaged = base | {"PYTHONPATH": f"{deps}:{code}", "PYTHONDONTWRITEBYTECODE": "1"}
    packaged.pop("PYTHONPYCACHEPREFIX", None)
    known = {
        "package": Variant("package", ("-S",), packaged, code),
        "precompiled": Variant(
            "precompiled",
            ("-S",),
            {k: v for k, v in packaged.items() if k != "PYTHONDONTWRITEBYTECODE"}
            | {"PYTHONPYCACHEPREFIX": str(scratch / "pyc")},
            code,
        ),
        "venv": Variant("venv", (), base | {"PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}, code),
    }
    return [known[name] for name in names], closure


@dataclass
class Series:
    runs: list[dict[str, Any]] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def cumulative(self, phase: str) -> list[float]:
        upto = PHASES[: PHASES.index(phase) + 1]
        return [sum(run[p] for p in upto) * 1000 for run in self.runs]

    def values(self, key: str) -> list[float]:
        return [run[key] * 1000 for run in self.runs]


def run_child(
    target: str, variant: Variant, ssm: bool = True, importtime: bool = False
) -> tuple[dict[str, Any], float, str]:
    event = None if target in (BASELINE, BOTOCORE) else first_call(target)[0]
    settings = json.dumps(
        {
            "target": target,
            "event": event,
            "context": target not in NO_CONTEXT,
            "ssm": ssm,
            "ssm_parameter": SSM_PARAMETER,
            "mark": MARK,
            "importtime": importtime,
        }
    )
    command = [sys.executable, *variant.flags, *(["-X", "importtime"] if importtime else []), "-c", CHILD]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, settings], cwd=variant.cwd, env=variant.env, capture_output=True, text=True, timeout=120
    )
    wall = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{target} ({variant.name}): the child failed\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result, wall, done.stderr


def measure(modules: dict[str, bool], variant: Variant, runs: int) -> dict[str, Series]:
    """`runs` rounds; each runs the baseline and every module once, in a shuffled order, so
    that the machine's load drifts over all of them alike. A first, untimed round warms the
    page cache (and, for `precompiled`, writes the bytecode)."""
    series = {target: Series() for target in [BASELINE, BOTOCORE, *modules]}
    rng = random.Random(5)
    for round_no in range(runs + 1):
        order = list(series)
        rng.shuffle(order)
        for target in order:
            result, wall, _ = run_child(target, variant, ssm=modules.get(target, True))
            if round_no:
                series[target].runs.append(result)
                series[target].wall.append(wall)
    return series


# -- -X importtime -----------------------------------------------------------------------------

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")
Entry = tuple[int, int, int, str]  # self us, cumulative us, depth, module


def importtime(target: str, variant: Variant, ssm: bool) -> list[Entry]:
    """Every import after the child's mark (its timed part)."""
    _, _, stderr = run_child(target, variant, ssm=ssm, importtime=True)
    found = []
    for line in stderr.split(MARK, 1)[1].splitlines():
        match = _LINE.match(line)
        if match:
            own, total, indent, name = match.groups()
            found.append((int(own), int(total), len(indent) // 2, name))
    return found


def by_package(entries: list[Entry]) -> list[tuple[str, float]]:
    totals: dict[str, int] = defaultdict(int)
    for own, _, _, name in entries:
        totals[name.partition(".")[0]] += own
    return sorted(((name, us / 1000) for name, us in totals.items()), key=lambda item: -item[1])


# -- report ------------------------------------------------------------------------------------


def fmt(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def report(
    variant: Variant, series: dict[str, Series], runs: int, ssm: dict[str, bool]
) -> dict[str, dict[str, float]]:
    """Print the variant's table; return each module's median ratio per phase."""
    base = series[BASELINE]
    base_total = base.values("total")
    base_median = statistics.median(base_total)
    print(f"\n## variant: {variant.name}")
    print(
        f"baseline `import boto3; boto3.client('dynamodb', region_name='us-east-1')`:"
        f" median {fmt(base_median)} ms, p95 {fmt(percentile(base_total, 95))} ms"
        f" (import boto3 {fmt(statistics.median(base.values('import_boto3')))} ms,"
        f" client {fmt(statistics.median(base.values('client')))} ms);"
        f" whole process {fmt(statistics.median(base.wall))} ms"
    )
    botocore_only = series[BOTOCORE]

    def median(found: Series, key: str) -> str:
        return fmt(statistics.median(found.values(key)))

    print(
        f"references (medians, same runs): after the baseline's client, on the same session, an SQS client"
        f" {median(base, 'sqs')} ms, an SSM client {median(base, 'ssm_same_session')} ms;"
        f" powertools SSMProvider() (a new boto3 Session) {median(base, 'ssm_powertools')} ms;"
        f" without boto3 (`import botocore.session`, dynamodb client) {median(botocore_only, 'total')} ms,"
        f" then an SQS client {median(botocore_only, 'sqs')} ms"
    )
    print(f"{runs} fresh interpreters per row; ms, cumulative, median / p95; x = median / baseline median\n")
    print(
        "| handler module | "
        + " | ".join(f"{LABELS[p]} | x" for p in PHASES)
        + " | whole process | compiling our modules (untimed) | first call (status) |"
    )
    print("|---" * (2 + 2 * len(PHASES) + 2) + "|")
    ratios: dict[str, dict[str, float]] = {}
    for module, found in series.items():
        if module in (BASELINE, BOTOCORE):
            continue
        ratios[module] = {}
        cells = []
        for phase in PHASES:
            values = found.cumulative(phase)
            ratio = ratios[module][phase] = statistics.median(values) / base_median
            over = statistics.median(values) - base_median
            cells.append(
                f"{fmt(statistics.median(values))} / {fmt(percentile(values, 95))} | {ratio:.2f} ({over:+.0f} ms)"
            )
        probe = first_call(module)[1]
        if module in NO_CONTEXT:
            probe += "; no Context (its routes never build one)"
        if not ssm[module]:
            probe += "; no secret read"
        statuses = ", ".join(sorted({str(run["status"]) for run in found.runs}))
        crypto = "; cryptography imported" if any(run["cryptography"] for run in found.runs) else ""
        print(
            f"| {module} | {' | '.join(cells)} | {fmt(statistics.median(found.wall))} |"
            f" {fmt(statistics.median(found.values('compile')))} ({found.runs[0]['first_party']} modules) |"
            f" {probe} ({statuses}){crypto} |"
        )
    print()
    for phase in PHASES:
        worst = max(ratios, key=lambda m: ratios[m][phase])
        ratio = ratios[worst][phase]
        verdict = "met" if ratio <= TARGET_RATIO else f"MISSED, by {ratio / TARGET_RATIO - 1:.1%}"
        over = [m for m in ratios if ratios[m][phase] > TARGET_RATIO]
        over_floor = ratio * base_median - base_median
        print(
            f"target, {LABELS[phase]} <= {TARGET_RATIO} x baseline: {verdict} (worst {worst}, {ratio:.2f} x,"
            f" {over_floor:+.0f} ms over the boto3 floor;"
            f" over: {', '.join(over) if over else 'none'})"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per module and variant")
    parser.add_argument("--variants", default="package,precompiled", help="package, precompiled, venv")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    modules = handler_modules()
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        chosen, closure = variants(args.variants.split(","), Path(scratch))
        print(f"# Cold start, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average before {os.getloadavg()}"
        )
        print(f"handler modules (template.yaml): {', '.join(modules)}")
        print(f"Lambda package dependencies ({len(closure) - 1}): {', '.join(closure)}")
        print(f"source tree: {source_tree()}")
        first: dict[str, dict[str, float]] = {}
        for variant in chosen:
            ratios = report(variant, measure(modules, variant, args.runs), args.runs, modules)
            first = first or ratios
        print(f"\nload average after {os.getloadavg()}")

        variant = chosen[0]
        print(f"\n## -X importtime, one run per module ({variant.name}; importtime's overhead included)")
        print("self time by top-level package, ms (the 6 largest), over import, context, first call, SSM:")
        traces = {}
        for module in modules:
            traces[module] = importtime(module, variant, modules[module])
            top = ", ".join(f"{name} {ms:.0f}" for name, ms in by_package(traces[module])[:6])
            print(f"  {module}: {top}")
        worst = max(first, key=lambda m: first[m][PHASES[-1]])
        print(f"\ntop {args.top} cumulative imports of the slowest handler, {worst} (indent: nesting):")
        for own, total, depth, name in sorted(traces[worst], key=lambda entry: -entry[1])[: args.top]:
            print(f"  {total / 1000:7.1f} ms cumulative {own / 1000:6.1f} ms self  {'  ' * depth}{name}")


if __name__ == "__main__":
    main()
