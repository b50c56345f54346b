"""scripts/run_*.sh: the commands they build for one GPU, N GPUs (torchrun per scene) and a multi-machine launch
(DRY_RUN=1 prints them instead of running them)."""
import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPERS = {"run_mip360_in.sh": ["bonsai", "counter", "kitchen", "room"],
            "run_mip360_out.sh": ["bicycle", "flowers", "garden", "treehill", "stump"],
            "run_tnt.sh": ["train", "truck"], "run_db.sh": ["drjohnson", "playroom"]}


def _dry_run(tmp_path, script, *args, **env):
    data = tmp_path / "data"
    for scene in WRAPPERS[script]:
        (data / scene).mkdir(parents=True, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k not in ("NGPUS", "TORCHRUN", "SKIP_EVAL")}
    full.update(DRY_RUN="1", DATA_ROOT=str(data), OUT_ROOT=str(tmp_path / "out"), **env)
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], env=full, capture_output=True,
                       text=True, timeout=60)
    return r, [shlex.split(line) for line in r.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("script", sorted(WRAPPERS))
def test_one_gpu_runs_python_per_scene(tmp_path, script):
    r, cmds = _dry_run(tmp_path, script, "--quiet")
    assert r.returncode == 0, r.stderr
    scenes = WRAPPERS[script]
    assert len(cmds) == 3 * len(scenes)  # train, render, metrics per scene
    for scene, (trn, rnd, met) in zip(scenes, zip(cmds[0::3], cmds[1::3], cmds[2::3])):
        assert trn[:2] == ["python", "train.py"] and trn[-1] == "--quiet"
        assert trn[trn.index("-s") + 1] == str(tmp_path / "data" / scene)
        assert trn[trn.index("-m") + 1] == str(tmp_path / "out" / scene)
        assert rnd[:2] == ["python", "render.py"] and met[:2] == ["python", "metrics.py"]


@pytest.mark.parametrize("how", [("--gpus", "4"), ("--gpus=4",), "NGPUS"])
def test_n_gpus_launch_each_scene_with_torchrun(tmp_path, how):
    args, env = (("--eval",), dict(NGPUS="4")) if how == "NGPUS" else ((*how, "--eval"), {})
    r, cmds = _dry_run(tmp_path, "run_tnt.sh", *args, **env)
    assert r.returncode == 0, r.stderr
    trains = [c for c in cmds if "train.py" in c]
    assert len(trains) == 2
    for c in trains:
        assert c[:6] == ["torchrun", "--standalone", "--nproc_per_node", "4", "--", "train.py"]
        assert "--gpus" not in c and not any(a.startswith("--gpus") for a in c)
    assert all(c[0] == "python" for c in cmds if "train.py" not in c)  # render and metrics: one process


def test_a_multi_machine_launch_and_skip_eval(tmp_path):
    launch = "torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=host:29400"
    r, cmds = _dry_run(tmp_path, "run_db.sh", TORCHRUN=launch, SKIP_EVAL="1")
    assert r.returncode == 0, r.stderr
    assert len(cmds) == 2 and all(c[:7] == shlex.split(launch) + ["--", "train.py"] for c in cmds)


@pytest.mark.parametrize("gpus", ["0", "two", ""])
def test_a_bad_gpu_count_is_a_one_line_error(tmp_path, gpus):
    r, cmds = _dry_run(tmp_path, "run_tnt.sh", "--gpus", gpus)
    assert r.returncode == 2 and not cmds
    assert r.stderr.startswith("error: --gpus/NGPUS") and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_missing_scene_folder_is_a_one_line_error(tmp_path):
    full = dict(os.environ, DRY_RUN="1", DATA_ROOT=str(tmp_path / "nowhere"), OUT_ROOT=str(tmp_path / "out"))
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "run_db.sh")], env=full, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "scene folder" in r.stderr and "drjohnson" in r.stderr
