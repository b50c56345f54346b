"""torchrun (issue 17): the teachers spread over the ranks, the student data-parallel over all of them, and the one
model of --num_models 1 data-parallel (CPU, gloo)."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

import train
from scene.gaussian_model import PARAM_NAMES, GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.test_resume import DISTILL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
MODELS = ("G_perb", "G_drop", "G_std", "student")
# three views per step: three ranks render one each (four: the fourth waits with zero contributions)
VIEWS = ("--views_per_step", "3")
# a vanilla model that densifies (120 -> ~600 Gaussians) within 30 steps of two views
VANILLA = ["--num_models", "1", "--iterations", "30", "--views_per_step", "2", "--densify_from_iter", "5",
           "--densification_interval", "10", "--densify_until_iter", "25", "--opacity_reset_interval", "20",
           "--densify_grad_threshold", "0.00005", "--test_iterations", "30", "--save_iterations", "30", "--eval",
           "--quiet", "--checkpoint_every_minutes", "0"]


def _env(gpus=False, **extra):
    # the repository first, then whatever the caller's PYTHONPATH holds (e.g. a prebuilt extension, plyfile); the
    # GPUs hidden unless asked for: these are CPU/gloo tests, and on a GPU machine train.py would take the GPUs (and
    # refuse more ranks than it has)
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("DISTILLED3DGS_TEST_FAIL_RANK", None)
    env.update(extra)
    return env


def _train(out, scene, nproc=None, env=None, extra=(), flags=(*DISTILL, *VIEWS), script=None):
    """train.py (or ``script``, which takes its arguments) in one process, or under torchrun with ``nproc`` ranks."""
    argv = [script or os.path.join(REPO, "train.py"), "-s", scene, "-m", out, *flags, "--dist_timeout_minutes", "0.2",
            *extra]
    cmd = [sys.executable, *argv] if nproc is None else [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}",
                                                        "--", *argv]  # (-- : train.py's --start is not torchrun's)
    return subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=120)


def _timing(key):
    """A distill.json field that differs between two runs of the same models (seconds, speed, memory)."""
    return key.endswith("seconds") or key in ("ms_per_step", "peak_memory_gib")


def _hashes(out, folders=tuple(f"point_cloud_{i}" for i in range(4))):
    found = {}
    for name in folders:
        folder = os.path.join(out, name)
        for it in sorted(n for n in os.listdir(folder) if n.startswith("iteration_")):
            with open(os.path.join(folder, it, "point_cloud.ply"), "rb") as f:
                found[f"{name}/{it}"] = hashlib.sha256(f.read()).hexdigest()
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


def _params(path):
    model = GaussianModel(3).load_ply(path)
    return torch.cat([model.params[k].detach().reshape(-1) for k in PARAM_NAMES]), model.num_points


@pytest.mark.parametrize("nproc", [3, 4])
def test_torchrun_outputs_equal_the_sequential_run(scene, sequential, tmp_path, nproc):
    out = str(tmp_path / "run")
    r = _train(out, scene, nproc)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    teachers = [f"point_cloud_{i}" for i in range(3)]
    want = _hashes(sequential, teachers)
    assert len(want) == 6 and _hashes(out, teachers) == want  # teachers bit-identical (sha256)
    # the data-parallel student: the same Gaussians, the same parameters up to the order of the gradient sums (gloo
    # adds three ranks' parts in another order than one process adds the views, and Adam's normalised first steps
    # turn a different rounding of a near-zero sum into up to +-lr); two ranks are bit-identical (test below)
    student = os.path.join("point_cloud_3", "iteration_{}", "point_cloud.ply")
    for it in (7, 25, 35):  # the teachers' saved iterations 7 and 25, and the end of the student's tail
        (a, n_a), (b, n_b) = (_params(os.path.join(d, student.format(it))) for d in (out, sequential))
        assert n_a == n_b and torch.allclose(a, b, rtol=1e-2, atol=2e-2), (it, float((a - b).abs().max()))
    got, ref = (json.load(open(os.path.join(d, "distill.json"))) for d in (out, sequential))
    assert list(got["models"]) == list(MODELS) == list(ref["models"])
    close = {"psnr": 0.05, "ssim": 0.005}  # the student's, from its slightly different parameters
    for name in MODELS:
        a, b = got["models"][name], ref["models"][name]
        assert {k: v for k, v in a.items() if not _timing(k) and k not in close} == \
            {k: v for k, v in b.items() if not _timing(k) and k not in close}, name
        assert all(abs(a[k] - b[k]) <= tol for k, tol in close.items()), name
    assert got["iterations"] == ref["iterations"]
    assert os.path.isfile(os.path.join(out, "cfg_args.json"))
    idle = "--views_per_step 3 limits the student to 3 of 4 ranks"
    assert (idle in r.stdout) == (nproc == 4), r.stdout[-2000:]


def test_two_ranks_train_one_model_as_one_process_does(scene, tmp_path, on_the_cpu):
    ref = str(tmp_path / "one")
    train.main(["-s", scene, "-m", ref, *VANILLA])
    out = str(tmp_path / "two")
    r = _train(out, scene, 2, flags=VANILLA)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    (a, n), (b, n_ref) = (_params(os.path.join(d, "point_cloud", "iteration_30", "point_cloud.ply"))
                          for d in (out, ref))
    assert n == n_ref > 3 * 120  # densified alike
    assert torch.equal(a, b)  # two parts of a sum in either order: bit-identical
    assert r.stdout.count("Training complete") == 1  # rank 0 reports (and writes), rank 1 is silent


# train.py with the CUDA graphs' eager stand-in (the CPU has none), which counts the views each graph would replay
GRAPHED_TRAIN = """import training.loop, train
from tests.test_graph_step import _EagerStandIn
training.loop.graphs_wanted = lambda pipe, device: True
training.loop.GraphedStep = _EagerStandIn
train._main.from_command_line = True
train.run_cli(train.main)
"""


def test_data_parallel_ranks_graph_the_views_they_render(scene, tmp_path):
    """--cuda_graphs under torchrun: each rank's step graph takes the first view it renders and the further views'
    graph its others (4 views a step on 2 ranks: 2 each); the all-reduced steps equal the eager ranks' bit for bit."""
    script = tmp_path / "graphed_train.py"
    script.write_text(GRAPHED_TRAIN)
    flags = [*VANILLA, "--views_per_step", "4"]  # (the last --views_per_step wins)
    runs = {}
    for name, how in (("eager", None), ("graphed", str(script))):
        out = str(tmp_path / name)
        r = _train(out, scene, 2, flags=flags, script=how)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        runs[name] = out
    with open(os.path.join(runs["graphed"], "point_cloud", "training_log.json")) as f:
        graphs = json.load(f)["cuda_graphs"]
    assert graphs["replays"] == 30 and graphs["further_views"] == 30 and graphs["eager_steps"] == 0, graphs
    ply = os.path.join("point_cloud", "iteration_30", "point_cloud.ply")
    (a, n), (b, n_ref) = (_params(os.path.join(runs[k], ply)) for k in ("graphed", "eager"))
    assert n == n_ref > 3 * 120 and torch.equal(a, b)


def test_graphed_ranks_distill_as_eager_ranks_do(scene, tmp_path):
    """The four models under torchrun with the graphs (their eager stand-ins): the teachers' noise events and dropout
    iterations around the replays, G_std and the student data-parallel (4 views a step on 2 ranks), the student's
    second targets and its novel views (the writer rank's graph): every PLY equal to the eager ranks'. (No structure
    loss: the graphed step back-propagates it apart from the novel view's loss, which moves the result by rounding.)"""
    script = tmp_path / "graphed_train.py"
    script.write_text(GRAPHED_TRAIN)
    flags = [*DISTILL, "--views_per_step", "4", "--lambda_structure", "0", "--novel_view_start", "0"]
    found = {}
    for name, how in (("eager", None), ("graphed", str(script))):
        out = str(tmp_path / name)
        r = _train(out, scene, 2, flags=flags, script=how)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        found[name] = _hashes(out)
        if how:
            with open(os.path.join(out, "distill.json")) as f:
                graphs = {m: d.get("cuda_graphs") for m, d in json.load(f)["models"].items()}
    assert found["graphed"] == found["eager"] and len(found["eager"]) >= 4
    assert graphs["student"]["further_views"] > 0 and graphs["student"]["added_view"] > 0, graphs


def test_one_view_per_step_trains_the_student_on_rank_0_alone(scene, tmp_path, on_the_cpu):
    """With --views_per_step 1 there is no view to split: rank 0 trains the student as one process does (no
    all-reduce a step), the other rank ends after the teachers; every PLY equals the sequential run's."""
    ref, out = str(tmp_path / "one"), str(tmp_path / "two")
    r = _train(ref, scene, flags=DISTILL)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _train(out, scene, 2, flags=DISTILL)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "note: --views_per_step 1: rank 0 trains the student alone" in r.stdout, r.stdout[-2000:]
    assert ("torchrun: G_perb on rank 1, G_drop on rank 1, G_std on rank 0, the student on rank 0 after G_std"
            in r.stdout), r.stdout[-2000:]
    assert "--distill_start 16000 (no measured quality cost on bonsai) lets it grow" in r.stdout  # (it waits at once)
    want = _hashes(ref)
    assert len(want) == 9 and _hashes(out) == want  # 2 PLYs per teacher, 3 for the student (its tail): sha256
    got, ref_summary = (json.load(open(os.path.join(d, "distill.json")))["models"] for d in (out, ref))
    assert got["student"].pop("joined_at_iteration") == 1  # the distillation term from the first step: it waited
    assert {m: {k: v for k, v in e.items() if not _timing(k)} for m, e in got.items()} == \
        {m: {k: v for k, v in e.items() if not _timing(k)} for m, e in ref_summary.items()}
    one_view = [*VANILLA, "--views_per_step", "1"]  # --num_models 1 the same way
    train.main(["-s", scene, "-m", str(tmp_path / "vanilla_one"), *one_view])
    r = _train(str(tmp_path / "vanilla_two"), scene, 2, flags=one_view)
    assert r.returncode == 0 and "rank 0 trains the model alone" in r.stdout, (r.stdout[-2000:], r.stderr[-3000:])
    assert r.stdout.count("Training complete") == 1
    assert _hashes(str(tmp_path / "vanilla_two"), ("point_cloud",)) == _hashes(str(tmp_path / "vanilla_one"),
                                                                              ("point_cloud",))


def _students_of_one_and_two_ranks(scene, sequential, tmp_path, flags):
    """Students of ``flags`` on copies of the sequential run's teachers, by one process and by two data-parallel
    ranks: their parameters must agree up to the order of the sums; returns both runs' student events."""
    runs = []
    for nproc in (None, 2):
        out = str(tmp_path / f"run{nproc}")
        shutil.copytree(sequential, out)
        r = _train(out, scene, nproc, flags=flags)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        runs.append(out)
    (a, n_a), (b, n_b) = (_params(os.path.join(d, "point_cloud_3", "iteration_35", "point_cloud.ply")) for d in runs)
    assert n_a == n_b and torch.allclose(a, b, rtol=1e-2, atol=2e-2), float((a - b).abs().max())
    return [json.load(open(os.path.join(d, "distill.json")))["models"]["student"]["events"] for d in runs]


def test_the_students_random_edits_agree_between_two_ranks_and_one_process(scene, sequential, tmp_path):
    """The sampled cuts, the relocation and the depth re-initialisation draw from the loop's generator on every rank
    (two views a step: the student data-parallel on both; the re-initialisation's points and their strongest
    contributors are rank 0's), and the
    opacity regularisation is added once: the same events, counts and, up to the order of the sums, parameters as
    one process."""
    flags = (*DISTILL, "--views_per_step", "2", "--start", "3", "--cut_selection", "sample", "--student_relocate",
             "1000", "--relocate_opacity", "0.1", "--relocate_opacity_reg", "0.5", "--depth_reinit", "on",
             "--student_depth_reinit", "17000", "--depth_reinit_colour", "strongest")
    # (x 0.001: re-initialised at 17, cut at 20-22, relocated at 23 and 24; the re-initialisation's contributors'
    # rows broadcast with its points)
    events = _students_of_one_and_two_ranks(scene, sequential, tmp_path, flags)
    assert events[0] == events[1]
    assert [e["kind"] for e in events[0]][:5] == ["first", "depth_reinit", "second", "second", "second"], events[0]
    assert any(e["kind"] == "relocate" for e in events[0]), events[0]


def test_an_mcmc_students_moves_and_noise_agree_between_two_ranks_and_one_process(scene, sequential, tmp_path):
    """--student_densify mcmc draws its thinning, moves, growth and position noise from the loop's generator on every
    rank (torch's own differ between ranks that render other views): two data-parallel ranks end with the same events
    and, up to the order of the sums, the same parameters as one process."""
    flags = (*(f for f in DISTILL if f != "--firstPrune"), "--views_per_step", "2", "--start", "3",
             "--student_densify", "mcmc", "--relocate_opacity", "0.1", "--mcmc_opacity_reg", "0.5")
    events = _students_of_one_and_two_ranks(scene, sequential, tmp_path, flags)
    assert events[0] == events[1] and {e["kind"] for e in events[0]} == {"mcmc"}
    assert any(e["moved"] for e in events[0]), events[0]


@pytest.mark.parametrize("flags, joined", [
    (["--distill_start", "20000"], 20),  # (x 0.001) the first step whose loss has the teachers' term
    (["--lambda_distill", "0", "--novel_views", "0"], None),  # never: the other ranks are released at its end
])
def test_rank_0_starts_the_student_before_the_other_teachers_end(scene, tmp_path, flags, joined):
    """One view per step on two ranks: rank 0 trains G_std, then the student, which learns from the photos alone
    until it first needs the teachers' renders and only then waits for rank 1's G_perb and G_drop: every PLY and
    distill.json entry equals the sequential run's with the same flags."""
    ref, out = str(tmp_path / "one"), str(tmp_path / "two")
    r = _train(ref, scene, flags=(*DISTILL, *flags))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _train(out, scene, 2, flags=(*DISTILL, *flags))
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert _hashes(out) == _hashes(ref)
    assert "--distill_start 16000" not in r.stdout  # (no hint: it does not wait at once)
    got, want = (json.load(open(os.path.join(d, "distill.json")))["models"] for d in (out, ref))
    assert got["student"].pop("joined_at_iteration") == joined and "wait_seconds" in got["student"]
    assert list(got) == list(MODELS)
    assert {m: {k: v for k, v in e.items() if not _timing(k)} for m, e in got.items()} == \
        {m: {k: v for k, v in e.items() if not _timing(k)} for m, e in want.items()}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_failing_in_the_student_stops_the_others_with_one_line(scene, sequential, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(sequential, out)  # its teachers: --start 3 trains the student only
    port = _free_port()
    argv = [sys.executable, os.path.join(REPO, "train.py"), "-s", scene, "-m", out, *DISTILL, *VIEWS,
            "--start", "3", "--dist_timeout_minutes", "0.2"]
    # the ranks without torchrun, whose agent would stop the others itself: they must stop on their own
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="3", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port), DISTILLED3DGS_TEST_FAIL_RANK="1",
                                       DISTILLED3DGS_TEST_FAIL_STEP="3"))
             for r in range(3)]
    t0 = time.time()
    errs = [p.communicate(timeout=90)[1] for p in procs]
    assert time.time() - t0 < 60
    assert [p.returncode for p in procs] == [2, 2, 2], errs
    assert "error: rank 1: failing on purpose at data-parallel step 3" in errs[1], errs[1][-3000:]
    for r in (0, 2):
        lines = [ln for ln in errs[r].splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and lines[0].startswith(f"error: rank {r}/3: the all-reduce of a training step "
                                                       f"failed"), errs[r][-3000:]
        assert "Traceback" not in errs[r]
    assert not os.path.isdir(os.path.join(out, "point_cloud_3"))


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


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL)")
def test_two_gpus_train_like_one(scene, tmp_path):
    """NCCL: --num_models 1 and the four-model run on 2 GPUs finish and match one GPU's run up to the GPU's own
    run-to-run differences (its backward sums with atomics, so even one GPU is not bit-reproducible)."""
    gpus = _env(gpus=True, CUDA_VISIBLE_DEVICES="0,1")
    for flags, name in ((VANILLA, "vanilla"), ((*DISTILL, *VIEWS), "four_models")):
        ref, out = str(tmp_path / f"{name}_one"), str(tmp_path / f"{name}_two")
        r = _train(ref, scene, env=gpus, flags=flags)
        assert r.returncode == 0, r.stderr[-3000:]
        r = _train(out, scene, 2, env=gpus, flags=flags, extra=("--dist_timeout_minutes", "2"))
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        assert "specify `device_id`" not in r.stderr, r.stderr[-2000:]  # NCCL bound to each rank's GPU
        if name == "vanilla":
            ply = os.path.join("point_cloud", "iteration_30", "point_cloud.ply")
            (_, n), (_, n_ref) = _params(os.path.join(out, ply)), _params(os.path.join(ref, ply))
            assert abs(n - n_ref) <= 0.05 * n_ref, (n, n_ref)
            continue
        got, want = (json.load(open(os.path.join(d, "distill.json")))["models"] for d in (out, ref))
        assert list(got) == list(MODELS)
        for model in MODELS:
            assert abs(got[model]["gaussians"] - want[model]["gaussians"]) <= 0.1 * want[model]["gaussians"], model
            assert abs(got[model]["psnr"] - want[model]["psnr"]) <= 0.5, model


def test_the_teachers_of_a_partial_round_train_on_every_rank():
    from distill.distributed import DistContext
    plan = lambda world, first, views: DistContext(0, world, "gloo", None).teacher_ranks(first, views)  # noqa: E731
    assert plan(2, 0, 6) == {0: (0,), 1: (1,), 2: (0, 1)}  # 1.5 stages instead of 2
    assert plan(2, 0, 2) == {0: (0,), 1: (1,), 2: (0, 1)}
    # one view a step is not split, and rank 0 trains the student alone: G_std (which it needs first) there
    assert plan(2, 0, 1) == {0: (1,), 1: (1,), 2: (0,)}
    assert plan(3, 0, 1) == plan(4, 0, 1) == {0: (1,), 1: (2,), 2: (0,)}
    assert plan(2, 1, 1) == {1: (1,), 2: (0,)} and plan(2, 2, 1) == {2: (0,)}
    assert plan(3, 0, 6) == {0: (0,), 1: (1,), 2: (2,)}  # whole rounds
    assert plan(4, 0, 6) == {0: (0,), 1: (1,), 2: (2,)}  # 3 x ceil(6 / 4) = 6 views a rank: no shorter
    assert plan(8, 0, 6) == {0: tuple(range(8)), 1: tuple(range(8)), 2: tuple(range(8))}  # 3 x 1 of 6
    assert plan(2, 2, 6) == {2: (0, 1)} and plan(2, 1, 6) == {1: (0,), 2: (1,)}  # --start 2, --start 1


def test_two_ranks_train_the_third_teacher_together_as_one_process_does(scene, tmp_path):
    """Three teachers on two ranks, two views a step: G_perb on rank 0, G_drop on rank 1, then G_std
    data-parallel on both (one view each): every teacher PLY equals the sequential run's (two parts of each sum);
    the data-parallel student too, up to the order of its sums (its novel-view loss and importance add in
    another order)."""
    flags = (*DISTILL, "--views_per_step", "2")
    ref, out = str(tmp_path / "one"), str(tmp_path / "two")
    r = _train(ref, scene, flags=flags)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _train(out, scene, 2, flags=flags)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "torchrun: G_perb on rank 0, G_drop on rank 1, G_std on ranks 0-1 (data-parallel)" in r.stdout
    teachers = [f"point_cloud_{i}" for i in range(3)]
    want = _hashes(ref, teachers)
    assert len(want) == 6 and _hashes(out, teachers) == want
    student = os.path.join("point_cloud_3", "iteration_{}", "point_cloud.ply")
    for it in (7, 25, 35):
        (a, n_a), (b, n_b) = (_params(os.path.join(d, student.format(it))) for d in (out, ref))
        assert n_a == n_b and torch.allclose(a, b, rtol=1e-2, atol=2e-2), (it, float((a - b).abs().max()))
    got, ref_summary = (json.load(open(os.path.join(d, "distill.json")))["models"] for d in (out, ref))
    assert list(got) == list(MODELS)
    for name in MODELS[:3]:
        assert {k: v for k, v in got[name].items() if not _timing(k)} == \
            {k: v for k, v in ref_summary[name].items() if not _timing(k)}, name


def test_three_ranks_share_g_drop_and_g_std_after_start_1(scene, sequential, tmp_path):
    """--start 1 on three ranks, six views a step: G_drop and G_std each data-parallel on all three (two views a
    rank); G_drop's dropout masks are drawn for every view on every rank, so the ranks stay in step and each view
    gets the mask it gets in one process: the same teachers up to the order of the gradient sums (the student,
    which learns from them, is compared in the tests above)."""
    flags = (*DISTILL, "--views_per_step", "6", "--start", "1")
    ref, out = str(tmp_path / "one"), str(tmp_path / "three")
    for d in (ref, out):
        shutil.copytree(sequential, d)
    r = _train(ref, scene, flags=flags)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _train(out, scene, 3, flags=flags)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "torchrun: G_drop on ranks 0-2 (data-parallel), G_std on ranks 0-2 (data-parallel)" in r.stdout
    for folder in ("point_cloud_1", "point_cloud_2"):
        for it in (7, 25):
            ply = os.path.join(folder, f"iteration_{it}", "point_cloud.ply")
            (a, n_a), (b, n_b) = (_params(os.path.join(d, ply)) for d in (out, ref))
            assert n_a == n_b and torch.allclose(a, b, rtol=1e-2, atol=2e-2), (ply, float((a - b).abs().max()))
