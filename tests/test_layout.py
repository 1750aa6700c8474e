"""The package's shape: layers that never import upward, dvc.yaml code deps that match what each
stage imports, test modules that never import each other."""

import ast
import json
import modulefinder
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, clean_env, copy_checkout

SRC = REPO / "src"
PACKAGE = SRC / "mnist_np"
# Bottom to top; a module may import from its own layer and the ones before it.
LAYERS = ["(base)", "data", "model", "training", "tracking", "serving", "experiments"]
# They only format failures or watch processes and ports, never change what a stage computes; see dvc.yaml.
NOT_DEPS = {"__init__.py", "cli.py", "errors.py", "processes.py"}


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else 0


def project_imports(path: Path) -> set[str]:
    """The mnist_np modules a file imports, as dotted names."""
    package = ".".join(path.relative_to(SRC).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [f"{module}.{a.name}" for a in node.names]
            found.update(
                n
                for n in [module, *names]
                if (SRC / Path(*n.split("."))).with_suffix(".py").is_file() or (SRC / Path(*n.split("."))).is_dir()
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("mnist_np.")}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_its_own(path):
    module = ".".join(path.relative_to(SRC).with_suffix("").parts)
    upward = [m for m in project_imports(path) if layer_of(m) > layer_of(module)]
    assert not upward, f"{module} ({LAYERS[layer_of(module)]}) imports {upward} from a layer above"


def test_no_modules_import_each_other_in_a_circle():
    """Two modules that import each other (directly or round a loop) are one idea split wrongly, or
    a constant living in the wrong place."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[module] = project_imports(path) - {module}
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError(f"imports in a circle: {' -> '.join([*path[path.index(module) :], module])}")
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_tests_run_the_versions_make_run_installs():
    """requirements-dev.lock (make test, CI) pins every package of requirements.lock (make run) at the
    same version, but for the two the Ray launcher holds back (the cluster extra)."""

    def pins(name: str) -> dict[str, str]:
        return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (REPO / name).read_text(), re.MULTILINE))

    product, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert "numpy" in product and "ray" not in product and "ray" in dev and "pytest" in dev
    differ = {k: (v, dev.get(k)) for k, v in product.items() if dev.get(k) != v}
    assert set(differ) <= {"joblib", "cloudpickle"}, differ


def test_every_sub_package_is_a_known_layer():
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == sorted(LAYERS[1:])


@pytest.mark.slow  # a fresh interpreter loading MLflow: 2-3 s
def test_comparing_runs_does_not_load_hydra():
    code = "import sys, mnist_np.experiments.compare; print(any(m.startswith('hydra') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def stage_code_deps(stage: dict) -> set[Path]:
    """The files a stage's code deps stand for (a folder stands for its .py files)."""
    files = set()
    for dep in stage["deps"]:
        path = REPO / dep
        if dep.startswith(("src/", "pipelines/")):
            files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return {f for f in files if f.name not in NOT_DEPS}


@pytest.mark.parametrize("name", ["conf", "download", "normalize", "train", "evaluate"])
def test_dvc_yaml_code_deps_are_exactly_what_the_stage_imports(name):
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    script = REPO / stage["cmd"].split()[1]
    finder = modulefinder.ModuleFinder(path=[str(SRC)])  # only our package: third-party imports are skipped
    finder.run_script(str(script))
    imported = {Path(m.__file__) for n, m in finder.modules.items() if n.startswith("mnist_np") and m.__file__}
    imported = {f for f in imported if f.name not in NOT_DEPS} | {script}
    listed = stage_code_deps(stage)
    assert listed == imported, (
        f"missing from dvc.yaml: {sorted(map(str, imported - listed))}; "
        f"listed but not imported: {sorted(map(str, listed - imported))}"
    )


def test_test_modules_never_import_each_other():
    tests = {p.stem for p in (REPO / "tests").glob("test_*.py")} | {"conftest"}
    for path in (REPO / "tests").glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
        assert not names & tests, f"{path.name} imports {names & tests}; shared helpers belong in helpers.py"


ENTRY_POINTS = sorted((REPO / "pipelines").glob("*.py"))


@pytest.mark.parametrize(
    "script", [*ENTRY_POINTS, PACKAGE / "serving" / "predict.py", PACKAGE / "cli.py"], ids=lambda p: p.name
)
def test_every_option_has_a_help_string_naming_its_default(script):
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            keywords = {k.arg: k.value for k in node.keywords}
            assert "help" in keywords, f"{script.name}:{node.lineno} has no help"
            if "default" in keywords and not isinstance(keywords.get("action"), ast.Constant):
                help_text = ast.unparse(keywords["help"])
                assert "default" in help_text, f"{script.name}:{node.lineno}: help does not name the default"


def test_help_answers_without_loading_mlflow():
    # MLflow's import is most of an entry point's start-up (docs/performance.md); --help must not wait for it.
    # One fresh interpreter asks every entry point in turn (one each would cost ~0.4 s apiece): the
    # first whose --help loads MLflow is the one named.
    code = (
        "import contextlib, io, json, runpy, sys\nanswers = []\n"
        "for script in sys.argv[1:]:\n"
        "    sys.argv, out = [script, '--help'], io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        runpy.run_path(script, run_name='__main__')\n"
        "    answers.append([script, out.getvalue(), 'mlflow' in sys.modules])\n"
        "print(json.dumps(answers))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, ENTRY_POINTS)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [script for script, _, _ in answers] == [str(p) for p in ENTRY_POINTS]
    for script, help_text, mlflow_loaded in answers:
        assert "usage" in help_text.lower() or "Examples" in help_text, f"{script}: {help_text}"
        assert not mlflow_loaded, f"{script} --help loaded MLflow"


def test_the_committed_dvc_lock_was_recorded_from_this_code_and_these_params(tmp_path):
    # A stage's code or params changed without `make run` afterwards: a fresh clone's `dvc repro`
    # would rerun that stage (and its weights might differ). `dvc status` in a copy of what git would
    # commit, without any data: every dep that is there must hash as dvc.lock says.
    copy_checkout(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    done = subprocess.run(
        ["dvc", "status", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    # Without data, DVC reports data deps "deleted"; code, conf and params.yaml are there to compare.
    stale = {
        stage: {dep: state for dep, state in entry["changed deps"].items() if state != "deleted"}
        for stage, entries in json.loads(done.stdout).items()
        for entry in entries
        if isinstance(entry, dict) and "changed deps" in entry
    }
    stale = {stage: deps for stage, deps in stale.items() if deps}
    assert not stale, f"dvc.lock is stale (run `make run` and commit dvc.lock): {stale}"


@pytest.mark.parametrize("folder", ["multirun", "outputs"])
def test_hydra_folders_are_ignored_wherever_a_sweep_or_run_starts(folder):
    for where in (f"{folder}/2026-12-03/10-00-00/.hydra/config.yaml", f"src/{folder}/x/job.log"):
        done = subprocess.run(["git", "check-ignore", "-q", where], cwd=REPO)
        assert done.returncode == 0, f"{where} is not ignored by git"
