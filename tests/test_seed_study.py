"""scripts/seed_study.py (seed studies of the four-model pipeline) and the student's --num_max_ratio."""
import contextlib
import io
import json
import math
import os
import queue
import re
import shutil
import subprocess

import pytest

import train
from scripts import seed_study
from scripts.make_synthetic_scene import make_synthetic_scene
from utils.errors import run_cli

# a very short schedule (90 iterations a model, densification at 15 and 30) on a 32 x 24 scene: ~9 s a run
TRAIN_FLAGS = ["--eval", "--views_per_step", "1", "--quiet", "--steps_scale", "0.003", "--densification_interval",
               "5000", "--opacity_reset_interval", "100000", "--test_iterations", "30000"]


def run_study(argv):
    """seed_study.main in this process; returns (exit status, stdout)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = seed_study.main(argv)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two seeds of the full pipeline, then two students on seed 0's teachers (both two at a time)."""
    root = tmp_path_factory.mktemp("seed_study")
    scene = make_synthetic_scene(str(root / "scene"), num_views=8, width=32, height=24, num_points=200, seed=0)
    # (two at a time: the study gives each run its share of the cores, see test_parallel_runs_share_the_cores)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OMP_NUM_THREADS", raising=False)
        out = str(root / "full")
        rc, text = run_study(["-s", scene, "-o", out, "--seeds", "0", "1", "--parallel", "2", "--label", "full",
                              "--"] + TRAIN_FLAGS)
        assert rc == 0, text
        students = str(root / "students")
        rc2, text2 = run_study(["-s", scene, "-o", students, "--students_only", os.path.join(out, "seed_0"),
                                "--seeds", "5", "6", "--parallel", "2", "--"] + TRAIN_FLAGS)
        assert rc2 == 0, text2
    return dict(scene=scene, out=out, text=text, students=students, students_text=text2,
                json=json.load(open(os.path.join(out, "seed_study.json"))),
                students_json=json.load(open(os.path.join(students, "seed_study.json"))))


def test_parallel_runs_share_the_cores(monkeypatch):
    assert seed_study.child_threads(2, {}, 2) == "1"
    assert seed_study.child_threads(4, {}, 32) == "8" and seed_study.child_threads(16, {}, 8) == "1"
    assert seed_study.child_threads(1, {}, 2) is None  # one run has the machine: torch's default
    assert seed_study.child_threads(2, {"OMP_NUM_THREADS": "3"}, 2) is None  # the user's setting stands
    seen = []  # and the runs get it in their environment
    monkeypatch.setattr(seed_study.subprocess, "run", lambda cmd, env, **kw: seen.append(env) or
                        subprocess.CompletedProcess(cmd, 1))
    slots = queue.Queue()
    slots.put(0)
    seed_study.run_seed(0, ["train.py"], "/nonexistent/seed_0", os.devnull, None, slots, None, "1")
    assert seen[0]["OMP_NUM_THREADS"] == "1"


def test_summarize_hand_computed():
    s = seed_study.summarize([1, 2, 3, 4])
    # mean 2.5, sd sqrt(5/3) = 1.290994, t(0.975, 3) = 3.182446: half width 3.182446 x 1.290994 / 2 = 2.054257
    assert s["n"] == 4 and s["mean"] == pytest.approx(2.5)
    assert s["sd"] == pytest.approx(1.290994, abs=1e-6)
    assert s["ci95_low"] == pytest.approx(2.5 - 2.054257, abs=1e-5)
    assert s["ci95_high"] == pytest.approx(2.5 + 2.054257, abs=1e-5)
    # two values: sd 0.141421, t(0.975, 1) = 12.706205, half width 12.706205 x 0.141421 / sqrt(2) = 1.270620
    s = seed_study.summarize([0.1, -0.1])
    assert s["mean"] == pytest.approx(0.0, abs=1e-12) and s["sd"] == pytest.approx(0.141421, abs=1e-6)
    assert (s["ci95_low"], s["ci95_high"]) == (pytest.approx(-1.270620, abs=1e-5), pytest.approx(1.270620, abs=1e-5))
    assert seed_study.summarize([3.0]) == dict(mean=3.0, sd=None, ci95_low=None, ci95_high=None, n=1)
    assert seed_study.summarize([]) == dict(mean=None, sd=None, ci95_low=None, ci95_high=None, n=0)


def test_welch_hand_computed():
    # A = 0, 2 and B = 3, 5: variances 2 and 2, se sqrt(1 + 1), df (1 + 1)^2 / (1 + 1) = 2, t(0.975, 2) = 4.302653
    w = seed_study.welch([0, 2], [3, 5])
    assert w["diff"] == pytest.approx(3.0) and w["se"] == pytest.approx(math.sqrt(2)) and w["df"] == pytest.approx(2)
    assert w["ci95_low"] == pytest.approx(3 - 4.302653 * math.sqrt(2), abs=1e-5)
    assert w["ci95_high"] == pytest.approx(3 + 4.302653 * math.sqrt(2), abs=1e-5)
    assert seed_study.welch([1.0], [2.0, 3.0])["ci95_low"] is None  # needs 2 values on each side
    flat = seed_study.welch([1.0, 1.0], [2.0, 2.0])
    assert (flat["diff"], flat["ci95_low"], flat["ci95_high"]) == (1.0, 1.0, 1.0)


def test_two_seeds_json_and_table(study):
    s = study["json"]
    assert s["label"] == "full" and s["mode"] == "seeds" and s["seeds"] == [0, 1] and s["failed"] == []
    assert s["train_flags"] == TRAIN_FLAGS
    runs = s["runs"]
    for r, seed in zip(runs, (0, 1)):
        assert r["status"] == "ok" and r["seed"] == seed
        cmd = r["command"]
        assert cmd[cmd.index("--seed") + 1] == str(seed) and cmd[-len(TRAIN_FLAGS):] == TRAIN_FLAGS
        on_disk = json.load(open(os.path.join(study["out"], f"seed_{seed}", "distill.json")))
        assert r["distill"] == on_disk  # the record is what the run wrote
        m = on_disk["models"]
        assert r["student_minus_G_std"]["psnr"] == pytest.approx(m["student"]["psnr"] - m["G_std"]["psnr"])
        assert r["student_minus_G_std"]["ssim"] == pytest.approx(m["student"]["ssim"] - m["G_std"]["ssim"])
        assert r["gaussian_ratio"] == pytest.approx(m["student"]["gaussians"] / m["G_std"]["gaussians"])
        assert m["student"]["num_max_effective"] == round(0.4 * m["G_std"]["gaussians"])  # --num_max_ratio 0.4
    # the seeds differ
    a, b = (r["distill"]["models"] for r in runs)
    assert a["G_std"]["psnr"] != b["G_std"]["psnr"] or a["student"]["psnr"] != b["student"]["psnr"]
    # the statistics are those of the per-seed values
    for k in ("psnr", "ssim"):
        assert s["stats"][k] == pytest.approx(seed_study.summarize([r["student_minus_G_std"][k] for r in runs]))
    assert s["stats"]["gaussian_ratio"] == pytest.approx(seed_study.summarize([r["gaussian_ratio"] for r in runs]))
    lpips = [r["student_minus_G_std"]["lpips"] for r in runs]
    assert (s["stats"]["lpips"] is None) == (None in lpips)
    # the table: a row per seed with its numbers, then the intervals
    text = study["text"]
    for r in runs:
        m = r["distill"]["models"]
        row = next(line for line in text.splitlines() if line.split()[:1] == [str(r["seed"])])
        assert f"{m['G_perb']['psnr']:.2f}" in row and f"{m['student']['psnr']:.2f}" in row
        assert str(m["student"]["gaussians"]) in row and f"{r['student_minus_G_std']['psnr']:+.3f}" in row
        assert f"{r['gaussian_ratio']:.3f}" in row
    ps = s["stats"]["psnr"]
    assert f"mean {ps['mean']:+.4f}  sd {ps['sd']:.4f}  95% CI [{ps['ci95_low']:+.4f}, {ps['ci95_high']:+.4f}]" in text
    # two at a time on the same device (no --gpus): the seconds are flagged as no timings
    assert s["parallel"] == 2 and s["gpus"] is None and "runs 2 at a time on shared devices" in text


def test_students_only_on_one_set_of_teachers(study):
    s, teachers = study["students_json"], os.path.join(study["out"], "seed_0")
    assert s["mode"] == "students_only" and s["teachers"] == teachers and s["failed"] == []
    t_models = json.load(open(os.path.join(teachers, "distill.json")))["models"]
    students = []
    for r in s["runs"]:
        assert "--start" in r["command"] and r["command"][r["command"].index("--start") + 1] == "3"
        m = r["distill"]["models"]
        for k in ("G_perb", "G_drop", "G_std"):  # the teachers' numbers, from their distill.json
            assert m[k] == t_models[k]
        ply = os.path.join("point_cloud_2", "iteration_90", "point_cloud.ply")
        assert os.path.isfile(os.path.join(r["folder"], ply))
        # the teachers' PLYs are shared with the study they come from (hard links), not copied
        assert os.path.samefile(os.path.join(r["folder"], ply), os.path.join(teachers, ply))
        students.append(m["student"])
    assert students[0]["psnr"] != students[1]["psnr"] or students[0]["gaussians"] != students[1]["gaussians"]
    assert s["stats"]["psnr"] == pytest.approx(
        seed_study.summarize([st["psnr"] - t_models["G_std"]["psnr"] for st in students]), abs=1e-9)


def test_resume_and_one_seed(study, tmp_path, capsys):
    # finished seeds are not overwritten without --resume
    out = str(tmp_path / "students")
    shutil.copytree(study["students"], out)
    argv = ["-s", study["scene"], "-o", out, "--students_only", os.path.join(study["out"], "seed_0"),
            "--seeds", "5", "--"] + TRAIN_FLAGS
    with pytest.raises(SystemExit) as e:
        run_cli(seed_study.main, argv)
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
    # --resume keeps seed 5 and trains nothing; one seed has no interval
    capsys.readouterr()
    rc, text = run_study(argv[:-len(TRAIN_FLAGS) - 1] + ["--resume", "--"] + TRAIN_FLAGS)
    assert rc == 0 and "kept the finished run" in text and "n=1: the interval needs 2 seeds" in text
    one = json.load(open(os.path.join(out, "seed_study.json")))
    assert one["runs"][0]["resumed"] and one["stats"]["psnr"]["n"] == 1 and one["stats"]["psnr"]["sd"] is None


def _fake_trainer(tmp_path, monkeypatch, code):
    """seed_study runs ``code`` (a stand-in for train.py writing distill.json) on an empty scene folder."""
    fake = tmp_path / "fake_train.py"
    fake.write_text(code)
    monkeypatch.setattr(seed_study, "TRAIN", str(fake))
    (tmp_path / "scene").mkdir()


FAKE_TRAIN = '''
import json, os, sys
a = sys.argv
seed, out = int(a[a.index("--seed") + 1]), a[a.index("-m") + 1]
if seed == 1:
    print("training step 7: something broke")
    sys.exit(3)
os.makedirs(out, exist_ok=True)
m = dict(psnr=20.0 + seed, ssim=0.8, lpips=0.2, gaussians=1000, stage_seconds=1.0)
s = dict(m, psnr=19.5 + seed, lpips=0.25, gaussians=150, gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))
json.dump(dict(models=dict(G_perb=m, G_drop=m, G_std=m, student=s)), open(os.path.join(out, "distill.json"), "w"))
'''


def test_a_failing_seed_is_reported_and_the_others_kept(tmp_path, monkeypatch, capsys):
    _fake_trainer(tmp_path, monkeypatch, FAKE_TRAIN)
    rc = seed_study.main(["-s", str(tmp_path / "scene"), "-o", str(tmp_path / "o"), "--num_seeds", "3",
                          "--parallel", "2", "--gpus", "3", "4"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "seed 1: FAILED (exit status 3)" in err and "something broke" in err and "seed(s) 1 failed" in err
    s = json.load(open(tmp_path / "o" / "seed_study.json"))
    assert s["failed"] == [1] and [r["status"] for r in s["runs"]] == ["ok", "failed", "ok"]
    assert s["stats"]["psnr"]["n"] == 2 and s["stats"]["psnr"]["mean"] == pytest.approx(-0.5)
    assert s["stats"]["lpips"]["mean"] == pytest.approx(0.05) and s["stats"]["gaussian_ratio"]["sd"] == 0
    assert "FAILED (exit 3)" in out and "shared devices" not in out  # (one GPU a run: the seconds are timings)
    for r in s["runs"]:  # each parallel slot runs on its own GPU
        assert r["gpu"] in ("3", "4")
        if r["status"] == "ok":
            assert r["distill"]["models"]["student"]["gpu"] == r["gpu"]


def test_compare_two_studies(study, capsys):
    a, b = study["json"], study["students_json"]
    rc = seed_study.main(["--compare", study["out"], os.path.join(study["students"], "seed_study.json")])
    text = capsys.readouterr().out
    assert rc == 0
    res = seed_study.compare_studies(a, b)
    w = res["psnr"]["b_minus_a"]
    va = [r["student_minus_G_std"]["psnr"] for r in a["runs"]]
    vb = [r["student_minus_G_std"]["psnr"] for r in b["runs"]]
    assert w == pytest.approx(seed_study.welch(va, vb))
    assert f"{w['diff']:+.4f}" in text and "Welch" in text and "paired" not in text


def _err_of(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(seed_study.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_error(tmp_path, capsys):
    scene = tmp_path / "scene"
    scene.mkdir()
    out = str(tmp_path / "o")
    assert "does not exist" in _err_of(["-s", str(tmp_path / "nope"), "-o", out], capsys)
    assert "--seeds needs at least one seed" in _err_of(["-s", str(scene), "-o", out, "--seeds"], capsys)
    assert "--num_seeds 0" in _err_of(["-s", str(scene), "-o", out, "--num_seeds", "0"], capsys)
    teachers = tmp_path / "t"
    for i in (0, 1):
        (teachers / f"point_cloud_{i}").mkdir(parents=True)
    assert "point_cloud_2" in _err_of(["-s", str(scene), "-o", out, "--students_only", str(teachers)], capsys)
    (teachers / "point_cloud_2").mkdir()
    assert "distill.json" in _err_of(["-s", str(scene), "-o", out, "--students_only", str(teachers)], capsys)
    assert "--seed" in _err_of(["-s", str(scene), "-o", out, "--", "--seed", "3"], capsys)
    assert "--no_such_flag" in _err_of(["-s", str(scene), "-o", out, "--", "--no_such_flag"], capsys)
    assert "seed_study.json" in _err_of(["--compare", str(tmp_path), str(tmp_path)], capsys)
    assert "--nproc_per_node 0 must be at least 1" in _err_of(["-s", str(scene), "-o", out, "--nproc_per_node", "0"],
                                                             capsys)
    err = _err_of(["-s", str(scene), "-o", out, "--nproc_per_node", "2", "--gpus", "0,1", "2"], capsys)
    assert "--gpus 2: with --nproc_per_node 2 each entry names one run's 2 devices" in err
    assert not os.path.exists(out)  # nothing was started


FAKE_RANKS = '''
import json, os, sys
a = sys.argv
out = a[a.index("-m") + 1]
if os.environ["RANK"] == "0":  # (torchrun's rank 0 writes, as train.py's)
    os.makedirs(out, exist_ok=True)
    m = dict(psnr=20.0, ssim=0.8, lpips=None, gaussians=1000)
    s = dict(m, psnr=20.5, gaussians=120, world=os.environ["WORLD_SIZE"], threads=os.environ.get("OMP_NUM_THREADS"),
             gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))
    json.dump(dict(models=dict(G_perb=m, G_drop=m, G_std=m, student=s)), open(os.path.join(out, "distill.json"), "w"))
'''


def test_seeds_under_torchrun(tmp_path, monkeypatch, capsys):
    """--nproc_per_node 2: each seed's run is torchrun's, with its --gpus entry and the cores shared by its ranks."""
    _fake_trainer(tmp_path, monkeypatch, FAKE_RANKS)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(seed_study.os, "cpu_count", lambda: 8)
    rc = seed_study.main(["-s", str(tmp_path / "scene"), "-o", str(tmp_path / "o"), "--seeds", "3", "4",
                          "--parallel", "2", "--nproc_per_node", "2", "--gpus", "0,1", "2,3"])
    assert rc == 0, capsys.readouterr()
    s = json.load(open(tmp_path / "o" / "seed_study.json"))
    assert s["nproc_per_node"] == 2 and s["stats"]["psnr"]["mean"] == pytest.approx(0.5)
    for r in s["runs"]:
        assert r["command"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        student = r["distill"]["models"]["student"]
        assert student["world"] == "2" and student["threads"] == "2" and student["gpus"] == r["gpu"]
    assert sorted(r["gpu"] for r in s["runs"]) == ["0,1", "2,3"]


def test_num_max_ratio_caps_the_students_growth_at_a_multiple_of_G_std(study, tmp_path, monkeypatch):
    from distill.roles import StudentStrategy
    folder = str(tmp_path / "m")
    seed_study.prepare_students_only(os.path.join(study["out"], "seed_0"), folder)
    calls = []
    densify = StudentStrategy.densify_and_prune

    def recording(self, model, state, prune_large=False):
        n0 = model.num_points
        res = densify(self, model, state, prune_large)
        calls.append((n0, model.num_points, self.config.num_max))
        return res
    monkeypatch.setattr(StudentStrategy, "densify_and_prune", recording)
    summary = train.main(["-s", study["scene"], "-m", folder, "--num_models", "4", "--start", "3",
                          "--num_max_ratio", "0.4"] + TRAIN_FLAGS)
    g_std = summary["models"]["G_std"]["gaussians"]
    cap = summary["models"]["student"]["num_max_effective"]
    assert cap == round(0.4 * g_std)
    assert json.load(open(os.path.join(folder, "distill.json")))["models"]["student"]["num_max_effective"] == cap
    assert calls and all(c[2] == cap for c in calls)
    assert calls[0][0] < cap and any(n0 >= cap for n0, _, _ in calls), calls  # the cap was reached...
    assert all(n1 <= n0 for n0, n1, _ in calls if n0 >= cap), calls  # ...and no densification grew past it
    with pytest.raises(SystemExit):
        run_cli(train.main, ["-s", study["scene"], "-m", folder, "--num_models", "4", "--num_max_ratio", "-1"])
    shutil.rmtree(folder)


FAKE_PAIRED = '''
import json, os, sys
a = sys.argv
seed, out = int(a[a.index("--seed") + 1]), a[a.index("-m") + 1]
os.makedirs(out, exist_ok=True)
if "--start" in a:  # a student on the copied teachers: 0.3 dB better than the first study's student of its seed
    d = json.load(open(os.path.join(out, "distill.json")))
    d["models"]["student"] = dict(psnr=d["models"]["G_std"]["psnr"] - 0.5 + 0.3, ssim=0.8, lpips=None, gaussians=150)
else:
    for i in range(3):
        os.makedirs(os.path.join(out, f"point_cloud_{i}"), exist_ok=True)
    m = dict(psnr=20.0 + 3 * seed, ssim=0.8, lpips=None, gaussians=1000)
    d = dict(models=dict(G_perb=m, G_drop=m, G_std=m, student=dict(m, psnr=19.5 + 3 * seed, gaussians=150)))
json.dump(d, open(os.path.join(out, "distill.json"), "w"))
'''


def test_students_on_a_study_pair_with_it(tmp_path, monkeypatch, capsys):
    _fake_trainer(tmp_path, monkeypatch, FAKE_PAIRED)
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    assert seed_study.main(["-s", str(tmp_path / "scene"), "-o", a_dir, "--seeds", "0", "1", "2"]) == 0
    assert seed_study.main(["-s", str(tmp_path / "scene"), "-o", b_dir, "--students_only", a_dir,
                            "--seeds", "0", "1", "2"]) == 0
    capsys.readouterr()
    b = json.load(open(os.path.join(b_dir, "seed_study.json")))
    for r in b["runs"]:  # each seed's student ran on that seed's teachers (G_std 20 + 3 seed)
        assert r["distill"]["models"]["G_std"]["psnr"] == 20.0 + 3 * r["seed"]
    assert seed_study.main(["--compare", a_dir, b_dir]) == 0
    text = capsys.readouterr().out
    a = json.load(open(os.path.join(a_dir, "seed_study.json")))
    res = seed_study.compare_studies(a, b)["psnr"]
    assert res["test"] == "paired" and res["b_minus_a"]["n"] == 3
    assert res["b_minus_a"]["diff"] == pytest.approx(0.3)
    assert res["b_minus_a"]["ci95_low"] == pytest.approx(0.3) and res["b_minus_a"]["ci95_high"] == pytest.approx(0.3)
    assert "paired over 3 seeds" in text
    # several pairs (here the same twice, as one change measured on two scenes): each, then every seed pair pooled
    assert seed_study.main(["--compare", a_dir, b_dir, a_dir, b_dir]) == 0
    pooled = capsys.readouterr().out.split("pooled over the 2 comparisons")[1]
    assert re.search(r"PSNR \(dB\)\s+\+0\.3000\s+\[\+0\.3000, \+0\.3000\] paired over 6 seeds", pooled), pooled
    # the pairing holds either way round, and between two studies of students on the same teachers
    assert seed_study.compare_studies(b, a)["psnr"]["b_minus_a"]["diff"] == pytest.approx(-0.3)
    assert seed_study.pooled_differences([(a, b), (b, a)], "psnr") == pytest.approx([0.3] * 3 + [-0.3] * 3)
    c_dir = str(tmp_path / "c")
    assert seed_study.main(["-s", str(tmp_path / "scene"), "-o", c_dir, "--students_only", a_dir,
                            "--seeds", "1", "2"]) == 0
    c = json.load(open(os.path.join(c_dir, "seed_study.json")))
    res = seed_study.compare_studies(b, c)["psnr"]
    assert res["test"] == "paired" and res["b_minus_a"]["n"] == 2 and res["b_minus_a"]["diff"] == pytest.approx(0)
    # the same folder with other teachers in it (trained again, or a study from another machine at that path)
    moved = dict(c, runs=[dict(r, distill=dict(models=dict(G_std=dict(psnr=1.0, gaussians=7)))) if r["seed"] == 2
                          else r for r in c["runs"]])
    assert seed_study.paired_seeds(b, moved) == [1]
    # students on one run's teachers (not the study's own per seed) share no seed's G_std with the study: Welch
    d = dict(c, teachers=os.path.join(a_dir, "seed_0"))
    assert seed_study.paired_seeds(a, d) is None and seed_study.compare_studies(a, d)["psnr"]["test"] == "welch"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(seed_study.main, ["--compare", a_dir, b_dir, a_dir])
    assert e.value.code == 2 and "pairs of studies" in capsys.readouterr().err
    # a seed the first study does not have: one line, before anything runs
    with pytest.raises(SystemExit) as e:
        run_cli(seed_study.main, ["-s", str(tmp_path / "scene"), "-o", str(tmp_path / "c"), "--students_only",
                                  a_dir, "--seeds", "7"])
    assert e.value.code == 2 and "point_cloud_0" in capsys.readouterr().err


FAKE_DRAWS = '''
import json, os, sys
a = sys.argv
seed, out = int(a[a.index("--seed") + 1]), a[a.index("-m") + 1]
os.makedirs(out, exist_ok=True)
for i in range(3):
    os.makedirs(os.path.join(out, f"point_cloud_{i}"), exist_ok=True)
m = dict(psnr=20.0, ssim=0.8, lpips=None, gaussians=1000)
# student - G_std: 0.1 x seed, plus what this run draws (FAKE_DRAW: a GPU run of the same seed moves)
s = dict(m, psnr=20.0 + 0.1 * seed + float(os.environ["FAKE_DRAW"]), gaussians=120)
json.dump(dict(models=dict(G_perb=m, G_drop=m, G_std=m, student=s)), open(os.path.join(out, "distill.json"), "w"))
'''


def test_pool_takes_several_studies_of_one_recipe_as_one_sample(tmp_path, monkeypatch, capsys):
    _fake_trainer(tmp_path, monkeypatch, FAKE_DRAWS)
    dirs = []
    for name, seeds, draw, flags in (("a", ["0", "1"], "0.0", []), ("b", ["0", "1"], "0.4", []),
                                     ("c", ["2", "3"], "0.0", ["--iterations", "10"])):
        monkeypatch.setenv("FAKE_DRAW", draw)
        dirs.append(str(tmp_path / name))
        assert seed_study.main(["-s", str(tmp_path / "scene"), "-o", dirs[-1], "--seeds", *seeds, "--", *flags]) == 0
    capsys.readouterr()
    assert seed_study.main(["--pool", *dirs]) == 0
    text = capsys.readouterr().out
    runs = [0.0, 0.1, 0.4, 0.5, 0.2, 0.3]  # a: seeds 0, 1; b: the same seeds drawn 0.4 higher; c: seeds 2, 3
    seeds = [0.2, 0.3, 0.2, 0.3]  # seeds 0 and 1: their two runs averaged
    res = seed_study.pooled_statistics([seed_study.load_study(d) for d in dirs])["psnr"]
    assert res["runs"] == pytest.approx(seed_study.summarize(runs))
    assert res["seeds"] == pytest.approx(seed_study.summarize(seeds))
    line = next(ln for ln in text.splitlines() if ln.startswith("PSNR"))
    r, s = res["runs"], res["seeds"]
    assert f"over 6 runs: {r['mean']:+.4f} [{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]" in line
    assert f"over 4 seeds: {s['mean']:+.4f} [{s['ci95_low']:+.4f}, {s['ci95_high']:+.4f}]" in line
    assert len([ln for ln in text.splitlines() if re.match(r"\S+\s+[0-3]\s+[+-]\d", ln)]) == 6  # every run
    assert "flags differ" in text and "--iterations 10" in text  # c's recipe is another: said, not refused
    assert "LPIPS" in text and "not available" in text
    assert "--pool" in _err_of(["--pool", str(tmp_path / "nope")], capsys)
