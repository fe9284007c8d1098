"""The Lambda bundle (`sam build`: core/ and handlers/ from deploy/Makefile, third-party packages
from the layer locked in deploy/layer/requirements.txt) holds what the functions import.

The layer is built for arm64, so it cannot be imported here; these tests import the handlers
from this venv behind an import blocker that lets through only the standard library, core,
handlers and the modules of the locked distributions.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.support.aws import load_template

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS_IN = ROOT / "deploy" / "requirements.in"
LOCK = ROOT / "deploy" / "layer" / "requirements.txt"

# pyproject.toml dependencies that only the one-machine runtime uses.
ONE_MACHINE = {"uvicorn", "httpx", "aiohttp"}
# Imported by core directly but declared by pyproject.toml only through botocore.
DIRECT_EXTRAS = {"urllib3"}
# Third-party imports in the bundle's modules that the Lambda path never runs: the asyncio
# transport (core/http/aio.py) and the one-machine runtime.
ONE_MACHINE_IMPORTS = {
    "core/http/aio.py": {"aiohttp"},
    "core/local/runtime.py": {"aiohttp"},
}
# Loaded on the AWS path after import (first request, first message), named here because the
# handler modules import them lazily.
AWS_PATH = [
    "core.aws.context",
    "core.aws.dynamodb",
    "core.aws.sqs",
    "core.services.stats",
    "core.aws.runtime",
    "urllib3",
    "aws_lambda_powertools.utilities.parameters",
    "swagger_ui_bundle",
]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonical(r.name): r for r in map(Requirement, filter(None, lines))}


def pins(path: Path) -> dict[str, str]:
    return {name: str(r.specifier).removeprefix("==") for name, r in requirements(path).items()}


def handler_modules() -> list[str]:
    resources = load_template()["Resources"].values()
    return sorted(
        {
            r["Properties"]["Handler"].rsplit(".", 1)[0]
            for r in resources
            if r["Type"] == "AWS::Serverless::Function"
        }
    )


def bundled_modules() -> set[str]:
    """Top-level modules of the locked distributions, as this venv installs them."""
    locked = set(pins(LOCK))
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if any(canonical(d) in locked for d in dists)
    }


def import_with_only_the_bundle(modules: list[str], call: str = "") -> dict[str, object]:
    """Import `modules` (then run `call`) in a fresh interpreter that can see only the standard
    library, core, handlers and the bundled modules; report what was blocked and loaded."""
    script = f"""
import importlib, json, sys
sys.path[:0] = [{str(ROOT)!r}, {sysconfig.get_paths()["purelib"]!r}]
allowed = set({sorted(bundled_modules())!r}) | {{"core", "handlers"}} | set(sys.stdlib_module_names)
blocked = []

class Blocker:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed:
            blocked.append(top)
            raise ModuleNotFoundError(f"No module named {{top!r}} in the Lambda bundle", name=top)
        return None

sys.meta_path.insert(0, Blocker())
error = None
try:
    for module in {modules!r}:
        importlib.import_module(module)
    exec({call!r})
except Exception as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"error": error, "blocked": sorted(set(blocked)), "loaded": sorted(sys.modules)}}))
"""
    env = {"JWT_SECRET": "bundle-test-secret", "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def third_party_imports(path: Path) -> set[str]:
    """Top-level names `path` imports anywhere (lazily too), except under `if TYPE_CHECKING`."""
    tree = ast.parse(path.read_text())
    skip = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for stmt in branch.body
        for node in ast.walk(stmt)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"core", "handlers", "__future__"}


def test_the_bundle_requirements_are_pyprojects_lambda_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        canonical(r.name): r
        for r in map(Requirement, project["dependencies"] + project["optional-dependencies"]["aws"])
    }
    bundle = requirements(REQUIREMENTS_IN)
    assert set(bundle) == set(declared) - ONE_MACHINE | DIRECT_EXTRAS
    for name, pinned in pins(REQUIREMENTS_IN).items():
        if name in declared:
            assert declared[name].specifier.contains(pinned), (
                f"{name}=={pinned} is outside pyproject.toml's range"
            )


def test_the_lock_is_up_to_date_with_requirements_in() -> None:
    locked = pins(LOCK)
    for name, version in pins(REQUIREMENTS_IN).items():
        assert locked.get(name) == version, f"{name}: re-lock with `make -f deploy/Makefile lock`"
    assert not set(locked) & ONE_MACHINE


def test_every_third_party_import_of_the_bundled_code_is_in_the_bundle() -> None:
    bundled = bundled_modules()
    sources = sorted((ROOT / "core").rglob("*.py")) + [
        ROOT / (module.replace(".", "/") + ".py") for module in handler_modules()
    ]
    sources += [ROOT / "handlers" / "_http.py", ROOT / "handlers" / "openapi.py"]
    missing = {}
    for path in sources:
        relative = path.relative_to(ROOT).as_posix()
        unknown = third_party_imports(path) - bundled - ONE_MACHINE_IMPORTS.get(relative, set())
        if unknown:
            missing[relative] = sorted(unknown)
    assert not missing, f"imported but not in deploy/requirements.in: {missing}"


def test_the_lambda_handlers_import_with_only_the_bundle() -> None:
    report = import_with_only_the_bundle(handler_modules() + AWS_PATH)
    assert report["error"] is None
    loaded = set(report["loaded"])  # type: ignore[arg-type]
    assert not loaded & {"core.local.runtime", "handlers.local.app", "aiohttp", "httpx", "uvicorn"}


def test_the_openapi_document_builds_with_only_the_bundle() -> None:
    report = import_with_only_the_bundle(["handlers.docs"], "sys.modules['handlers.docs'].document()")
    assert report["error"] is None
