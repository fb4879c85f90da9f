"""The layers follow the data flow: a lower layer never imports a higher one (docs/design.md section 3)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rmd_ray"

# rank: a module may import rmd_ray modules of equal or lower rank only.
LAYER_RANK = {"io": 0, "core": 1, "nn": 2, "data": 2, "evaluation": 2, "distributed": 3, "cli": 4}
# third-party packages each layer may NOT import
TORCH_AND_RAY = {"torch", "torchvision", "ray", "timm", "open_clip"}
FORBIDDEN = {0: TORCH_AND_RAY, 1: TORCH_AND_RAY, 2: {"ray"}}
ALLOWED: set[tuple[str, str]] = set()  # (module, import) pairs exempt from the rule: none


def layer_of(module_path: Path, root: Path) -> int | None:
    parts = module_path.relative_to(root).with_suffix("").parts
    if parts[0] == "__init__":
        return None  # the package root only holds the version string
    return LAYER_RANK[parts[0]]


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rank = layer_of(path, root)
        if rank is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top, *rest = name.split(".")
                allowed = (str(path.relative_to(root)), name) in ALLOWED
                if top == root.name and rest and rest[0] in LAYER_RANK and LAYER_RANK[rest[0]] > rank and not allowed:
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports higher layer {name}")
                if top in FORBIDDEN.get(rank, ()):
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports forbidden {name}")
    return found


def test_no_layer_imports_a_higher_one():
    assert violations(PACKAGE) == []


def test_checker_catches_a_planted_violation(tmp_path):
    fake = tmp_path / "rmd_ray"
    for sub in ("core", "nn", "distributed"):
        (fake / sub).mkdir(parents=True)
    (fake / "core" / "stats.py").write_text("import numpy\nimport torch\n")
    (fake / "nn" / "losses.py").write_text("from rmd_ray.distributed import trainer\nimport ray.data\n")
    (fake / "distributed" / "ok.py").write_text("from rmd_ray.core import stats\nimport ray\n")
    found = violations(fake)
    assert found == [
        "core/stats.py:2 imports forbidden torch",
        "nn/losses.py:1 imports higher layer rmd_ray.distributed",
        "nn/losses.py:2 imports forbidden ray.data",
    ]


def test_import_linter_contracts_are_kept():
    executable = shutil.which("lint-imports")
    if executable is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([executable], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_core_imports_without_torch_or_ray():
    code = "import sys, rmd_ray.core; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_decode_task_at_the_cifar_geometry_never_loads_torch():
    # every fresh Ray worker that runs a training decode task pays for what this imports, at each
    # epoch's first batch: torch + torchvision cost ~3 s there (measured), the cifar path needs neither
    code = (
        "import io, sys\n"
        "import numpy as np, pyarrow as pa\n"
        "from PIL import Image\n"
        "from rmd_ray.distributed.sources.plan import Shard\n"
        "from rmd_ray.distributed.training.ingest import Geometry, _decode_shard\n"
        "buf = io.BytesIO(); Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(buf, format='PNG')\n"
        "table = pa.table({'id': ['a', 'b'], 'image': [buf.getvalue()] * 2, 'label': [0, 1]})\n"
        "import rmd_ray.distributed.training.ingest as ingest\n"
        "ingest.read_shard = lambda shard, classes: table\n"
        "out = list(_decode_shard(pa.table({'shards': [[0]]}), plan={0: None}, offsets={0: 0}, classes=('x', 'y'),\n"
        "    geometry=Geometry('cifar', 8), train=True, permute='fresh', seed=0, weights=None))\n"
        "print(out[0]['image'].shape, sorted(m for m in ('torch', 'torchvision', 'ray.train') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 8, 8, 3) []"
