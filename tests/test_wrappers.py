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


@pytest.mark.parametrize("how", [("--gpus", "2", "--one_scene_per_gpu"), ("--one_scene_per_gpu", "--gpus=2"),
                                 "env"])
def test_one_scene_per_gpu_gives_each_gpu_every_nth_scene(tmp_path, how):
    args, env = (("--quiet",), dict(NGPUS="2", SCENE_PER_GPU="1")) if how == "env" else ((*how, "--quiet"), {})
    r, cmds = _dry_run(tmp_path, "run_mip360_out.sh", *args, **env)
    assert r.returncode == 0, r.stderr
    scenes = WRAPPERS["run_mip360_out.sh"]
    assert len(cmds) == 3 * len(scenes)
    order = scenes[0::2] + scenes[1::2]  # GPU 0's scenes, then GPU 1's (printed lane by lane)
    for k, scene in enumerate(order):
        gpu = "0" if k < len(scenes[0::2]) else "1"
        trn, rnd, met = cmds[3 * k:3 * k + 3]
        # render and metrics run on the scene's GPU too
        assert [c[:3] for c in (trn, rnd, met)] == [["env", f"CUDA_VISIBLE_DEVICES={gpu}", "python"]] * 3
        assert (trn[3], rnd[3], met[3]) == ("train.py", "render.py", "metrics.py")
        assert trn[trn.index("-s") + 1] == str(tmp_path / "data" / scene) and trn[-1] == "--quiet"
        assert "--one_scene_per_gpu" not in trn


def test_one_scene_per_gpu_refuses_a_torchrun_launch(tmp_path):
    r, cmds = _dry_run(tmp_path, "run_tnt.sh", "--one_scene_per_gpu", TORCHRUN="torchrun --nnodes=2")
    assert r.returncode == 2 and not cmds and len(r.stderr.splitlines()) == 1
    assert "--one_scene_per_gpu" in r.stderr and "TORCHRUN" in r.stderr


def test_every_scene_folder_is_checked_before_any_scene_trains(tmp_path):
    data = tmp_path / "data"
    (data / "drjohnson").mkdir(parents=True)  # playroom is missing
    full = dict(os.environ, DRY_RUN="1", DATA_ROOT=str(data), OUT_ROOT=str(tmp_path / "out"))
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "run_db.sh")], env=full, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and not r.stdout and "playroom" in r.stderr and len(r.stderr.splitlines()) == 1


def test_one_scene_per_gpu_runs_the_scenes_side_by_side_and_names_a_failed_one(tmp_path):
    """A real run with a stand-in python on PATH: it records each call and its GPU, and fails truck's training."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.txt"
    (bindir / "python").write_text(f"""#!/usr/bin/env bash
if [ "$1" = -c ]; then echo 2; exit 0; fi  # (the GPU count)
echo "$CUDA_VISIBLE_DEVICES $*" >> {calls}
echo "stand-in $*"
case "$*" in *train.py*truck*) echo "out of memory" >&2; exit 3 ;; esac
""")
    os.chmod(bindir / "python", 0o755)
    data = tmp_path / "data"
    for scene in WRAPPERS["run_tnt.sh"]:
        (data / scene).mkdir(parents=True)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", DATA_ROOT=str(data), OUT_ROOT=str(out))
    for k in ("DRY_RUN", "NGPUS", "TORCHRUN", "SKIP_EVAL", "SCENE_PER_GPU"):
        env.pop(k, None)
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "run_tnt.sh"), "--gpus", "2", "--one_scene_per_gpu"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: scene truck failed on GPU 1: see {out}/truck.log"
    assert f"GPU 0: train done (log {out}/train.log)" in r.stdout
    lines = calls.read_text().splitlines()
    train = [ln.split()[:2] for ln in lines if f"{data}/train" in ln or f"{out}/train" in ln]
    assert train == [["0", "train.py"], ["0", "render.py"], ["0", "metrics.py"]]
    truck = [ln.split()[:2] for ln in lines if "truck" in ln]
    assert truck == [["1", "train.py"]]  # no render or metrics after its training failed
    assert "out of memory" in (out / "truck.log").read_text()
