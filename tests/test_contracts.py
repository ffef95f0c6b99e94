"""One home per contract (issue 14): the task contract, errors, the CLI's error mapping and where
outputs go are each defined once; these tests fail when a second definition creeps back."""
import ast
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import ROOT

SOURCES = ("mobilebert_mobile", "converters", "benchmarks", "android_harness")


def _py_files():
    for top in SOURCES:
        for dp, _, fs in os.walk(os.path.join(ROOT, top)):
            for f in fs:
                if f.endswith(".py"):
                    yield os.path.join(dp, f)


def _assignments(name):
    """Files that assign a literal (tuple/list/dict/set) to a module-level ``name``."""
    found = []
    for p in _py_files():
        tree = ast.parse(open(p, encoding="utf-8").read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List, ast.Dict, ast.Set)):
                if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    found.append(os.path.relpath(p, ROOT))
    return found


@pytest.mark.parametrize("name", ["INPUT_NAMES", "TASKS", "DEFAULT_OUTPUTS", "KNOWN_OUTPUTS", "DEFAULT_TARGETS",
                                  "TARGET_METRIC", "TASK_CLASSES", "TASK_OF_ARCHITECTURE"])
def test_task_contract_is_written_once(name):
    assert _assignments(name) in ([], [os.path.join("mobilebert_mobile", "tasks.py")])


def test_task_specs_resolve_and_extract():
    from mobilebert_mobile.modeling import ARCHITECTURES
    from mobilebert_mobile.tasks import TASKS, task_of_architecture

    for name, spec in TASKS.items():
        assert spec.model_class in ARCHITECTURES
        assert set(spec.default_outputs) <= set(spec.outputs)
        for arch in spec.architectures:
            assert task_of_architecture(arch) == name
    out = types.SimpleNamespace(logits=np.array([[0.0, np.log(3.0)]]))
    got = TASKS["classification"].extract(out, ("probabilities", "logits"), lambda v: np.exp(v) / np.exp(v).sum())
    assert np.allclose(got["probabilities"], [[0.25, 0.75]]) and got["logits"] is out.logits


def test_light_modules_import_nothing_heavy():
    code = ("import sys; import mobilebert_mobile.tasks, mobilebert_mobile.errors, mobilebert_mobile.bundle, "
            "mobilebert_mobile.config_params; print(sorted(m for m in ('torch', 'tensorflow', 'numpy') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stderr


def test_cli_maps_error_types_not_names():
    src = open(os.path.join(ROOT, "mobilebert_mobile", "cli.py"), encoding="utf-8").read()
    assert "__name__ in {" not in src and "type(e).__name__" not in src
    srv = open(os.path.join(ROOT, "mobilebert_mobile", "runtime", "server.py"), encoding="utf-8").read()
    assert 'in str(e)' not in srv


def test_no_output_paths_from_the_installed_code():
    allowed = {os.path.join("mobilebert_mobile", "assets.py")}  # reads an installed data package, writes nothing
    offenders = [os.path.relpath(p, ROOT) for p in _py_files()
                 if "__file__" in open(p, encoding="utf-8").read() and os.path.relpath(p, ROOT) not in allowed]
    assert not offenders, offenders


def test_each_top_level_folder_says_what_it_is():
    for top in SOURCES + ("tests", "scripts", "docs"):
        text = open(os.path.join(ROOT, top, "README.md"), encoding="utf-8").read()
        if top in ("converters", "benchmarks", "android_harness"):
            assert f"mobilebert_mobile.{top}" in text


def test_every_error_of_ours_derives_from_the_base():
    import importlib
    import inspect

    from mobilebert_mobile.errors import MobileBertMobileError

    missing = []
    for p in _py_files():
        rel = os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".")
        top, _, rest = rel.partition(".")
        name = rel if top == "mobilebert_mobile" else f"mobilebert_mobile.{top}.{rest}"
        if name.endswith("__main__") or "litert_torch_export" in name:
            continue
        tree = ast.parse(open(p, encoding="utf-8").read())
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        if not any(c.endswith("Error") for c in classes):
            continue
        mod = importlib.import_module(name.removesuffix(".__init__"))
        for c in classes:
            obj = getattr(mod, c)
            if inspect.isclass(obj) and issubclass(obj, Exception) and not issubclass(obj, MobileBertMobileError) \
                    and not c.startswith("_"):
                missing.append(f"{name}.{c}")
    assert not missing, missing
