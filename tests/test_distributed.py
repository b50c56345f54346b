"""torchrun --num_models 4 (issue 17): teachers spread over the ranks, the student on rank 0 (CPU, gloo)."""
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from scripts.make_synthetic_scene import make_synthetic_scene
from tests.test_resume import DISTILL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
MODELS = ("G_perb", "G_drop", "G_std", "student")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.pop("DISTILLED3DGS_TEST_FAIL_RANK", None)
    env.update(extra)
    return env


def _train(out, scene, nproc=None, env=None, extra=()):
    argv = [os.path.join(REPO, "train.py"), "-s", scene, "-m", out, *DISTILL, "--dist_timeout_minutes", "0.2",
            *extra]
    cmd = [sys.executable, *argv] if nproc is None else [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}",
                                                        *argv]
    return subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=120)


def _hashes(out):
    found = {}
    for i in range(4):
        folder = os.path.join(out, f"point_cloud_{i}")
        for it in sorted(n for n in os.listdir(folder) if n.startswith("iteration_")):
            with open(os.path.join(folder, it, "point_cloud.ply"), "rb") as f:
                found[f"point_cloud_{i}/{it}"] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_synthetic_scene(str(tmp_path_factory.mktemp("dist") / "scene"), num_views=8, width=32, height=24,
                                num_points=120, seed=3)


@pytest.fixture(scope="module")
def sequential(scene, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("seq") / "run")
    r = _train(out, scene)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("nproc", [3, 4])
def test_torchrun_outputs_equal_the_sequential_run(scene, sequential, tmp_path, nproc):
    out = str(tmp_path / "run")
    r = _train(out, scene, nproc)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    want = _hashes(sequential)
    assert len(want) == 8 and _hashes(out) == want  # teachers and student bit-identical (sha256)
    got, ref = (json.load(open(os.path.join(d, "distill.json"))) for d in (out, sequential))
    assert list(got["models"]) == list(MODELS) == list(ref["models"])
    timing = lambda k: k.endswith("seconds") or k in ("ms_per_step", "peak_memory_gib")  # noqa: E731
    for name in MODELS:
        a, b = got["models"][name], ref["models"][name]
        assert {k: v for k, v in a.items() if not timing(k)} == {k: v for k, v in b.items() if not timing(k)}, name
    assert got["iterations"] == ref["iterations"]
    assert os.path.isfile(os.path.join(out, "cfg_args.json"))


def test_a_failed_rank_stops_the_run_with_one_line(scene, tmp_path):
    out = str(tmp_path / "run")
    t0 = time.time()
    r = _train(out, scene, 3, env=_env(DISTILLED3DGS_TEST_FAIL_RANK="1"))
    assert r.returncode != 0
    assert time.time() - t0 < 60
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert "error: rank 1: failing on purpose" in r.stderr, r.stderr[-3000:]
    assert all("Traceback" not in ln for ln in lines)
    assert not os.path.isdir(os.path.join(out, "point_cloud_3"))  # no student without all the teachers
