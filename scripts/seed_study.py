#!/usr/bin/env python
"""Seed study of the four-model Distilled-3DGS pipeline: student - G_std over several seeds.

Runs ``train.py --num_models 4`` once per seed (as subprocesses of the same Python) into <out>/seed_<s>/,
or, with --students_only <teachers folder>, trains only students (``--start 3``) on one set of trained
teachers, copied into each seed's folder. Prints a per-seed table and the mean, sample standard deviation
and 95% confidence interval (Student t) of student - G_std in PSNR, SSIM, LPIPS and of the student/G_std
Gaussian ratio, and writes everything to <out>/seed_study.json. --compare A B compares two such studies;
--compare A1 B1 A2 B2 ... several pairs (one change on several scenes), each and all their seed pairs pooled.

Usage:
  python scripts/seed_study.py -s <scene> -o <out> --seeds 0 1 2 3 --parallel 4 --label base \\
      -- --eval --steps_scale 0.25 --views_per_step 1 --num_max_ratio 0.6
  python scripts/seed_study.py -s <scene> -o <out2> --students_only <out>/seed_0 --num_seeds 4 \\
      -- --eval --steps_scale 0.25 --views_per_step 1 --num_max_ratio 0.4
  python scripts/seed_study.py --compare <out>/seed_study.json <out2>/seed_study.json
"""
import argparse
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from utils.errors import UserError, run_cli  # noqa: E402

TRAIN = os.path.join(_REPO, "train.py")
STUDY_NAME = "seed_study.json"
SUMMARY_NAME = "distill.json"  # distill.pipeline.SUMMARY_NAME (not imported: that module imports torch)
MODELS = ("G_perb", "G_drop", "G_std", "student")
TEACHERS = MODELS[:3]
# flags the study sets itself for every run; train.py flags after "--" must not repeat them
OWNED_FLAGS = ("-s", "--source_path", "-m", "--model_path", "--seed", "--num_models", "--start")
# the statistics: student - G_std in these metrics, then the Gaussian-count ratio student / G_std
DELTA_METRICS = ("psnr", "ssim", "lpips")
STAT_KEYS = DELTA_METRICS + ("gaussian_ratio",)
LOG_TAIL_LINES = 25


# ---- statistics -------------------------------------------------------------------------------------------

def summarize(values):
    """Mean, sample standard deviation (n - 1) and the 95% Student-t confidence interval of the mean.

    Returns dict(mean, sd, ci95_low, ci95_high, n); sd and the interval are None below 2 values, and
    everything but n is None for no values.
    """
    vals = [float(v) for v in values]
    n = len(vals)
    out = dict(mean=None, sd=None, ci95_low=None, ci95_high=None, n=n)
    if n == 0:
        return out
    mean = sum(vals) / n
    out["mean"] = mean
    if n < 2:
        return out
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = _t975(n - 1) * sd / math.sqrt(n)
    out.update(sd=sd, ci95_low=mean - half, ci95_high=mean + half)
    return out


def welch(a, b):
    """Difference of means mean(b) - mean(a) with Welch's 95% interval (unequal variances).

    Returns dict(diff, se, df, ci95_low, ci95_high, n_a, n_b); the interval (and se, df) are None unless
    both samples have at least 2 values. Two samples without spread give a zero-width interval.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    out = dict(diff=None, se=None, df=None, ci95_low=None, ci95_high=None, n_a=len(a), n_b=len(b))
    if not a or not b:
        return out
    sa, sb = summarize(a), summarize(b)
    out["diff"] = diff = sb["mean"] - sa["mean"]
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = sa["sd"] ** 2 / len(a), sb["sd"] ** 2 / len(b)
    se = math.sqrt(va + vb)
    out["se"] = se
    if se == 0:
        out.update(ci95_low=diff, ci95_high=diff)
        return out
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _t975(df) * se
    out.update(df=df, ci95_low=diff - half, ci95_high=diff + half)
    return out


def _t975(df):
    from scipy.stats import t
    return float(t.ppf(0.975, df))


# ---- one seed's record ------------------------------------------------------------------------------------

def read_summary(path):
    """distill.json as a dict, or None when it is missing; a broken file is a UserError."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            summary = json.load(f)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})")
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict):
        raise UserError(f"{path} has no 'models' entry: is it a train.py --num_models 4 summary?")
    return summary


def is_complete(summary):
    """A summary with all four models trained (a students-only folder starts with the teachers only)."""
    return bool(summary) and all(isinstance(summary["models"].get(m), dict)
                                 and summary["models"][m].get("gaussians") is not None for m in MODELS)


def derived(models):
    """student - G_std in PSNR, SSIM, LPIPS (None where either is missing) and the Gaussian ratio."""
    s, g = models["student"], models["G_std"]
    out = {}
    for k in DELTA_METRICS:
        out[k] = (s[k] - g[k]) if s.get(k) is not None and g.get(k) is not None else None
    out["gaussian_ratio"] = s["gaussians"] / g["gaussians"] if g.get("gaussians") else None
    return out


def stat_value(rec, key):
    """One seed's value of a statistic: student - G_std in a metric, or the Gaussian ratio."""
    return rec["student_minus_G_std"][key] if key in DELTA_METRICS else rec["gaussian_ratio"]


def statistics(records):
    """summarize() of each derived value over the successful seeds; None for a value missing in any seed."""
    ok = [r for r in records if r["status"] == "ok"]
    stats = {}
    for k in STAT_KEYS:
        vals = [stat_value(r, k) for r in ok]
        stats[k] = summarize(vals) if ok and all(v is not None for v in vals) else None
    return stats


# ---- running ----------------------------------------------------------------------------------------------

def seed_dir(out, seed):
    return os.path.join(out, f"seed_{seed}")


def _link_or_copy(src, dst):
    # the teachers' PLYs are only read by the --start 3 runs: hard links save gigabytes per student
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prepare_students_only(teachers, folder):
    """Put the teachers' point_cloud_0..2 (hard links where the file system allows, else copies) and their
    distill.json (without a student entry, so the folder's summary is complete only once this seed's student is
    trained) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for i in range(3):
        shutil.copytree(os.path.join(teachers, f"point_cloud_{i}"), os.path.join(folder, f"point_cloud_{i}"),
                        copy_function=_link_or_copy, dirs_exist_ok=True)
    summary = read_summary(os.path.join(teachers, SUMMARY_NAME))
    summary["models"] = {k: v for k, v in summary["models"].items() if k in TEACHERS}
    with open(os.path.join(folder, SUMMARY_NAME), "w") as f:
        json.dump(summary, f, indent=2)


def child_threads(parallel, environ, cpus):
    """OMP_NUM_THREADS for each of ``parallel`` processes at once: the ``cpus`` shared between them, unless the user
    set it (``environ``) or one process has the machine (None: torch's default). Measured on 2 cores: two tiny pipelines
    side by side with torch's default threads each took 5x as long as with one thread each (a stage up to 35x)."""
    if parallel <= 1 or "OMP_NUM_THREADS" in environ:
        return None
    return str(max(1, cpus // parallel))


def run_seed(seed, command, folder, log, teachers, gpu_slots, gpus, threads=None):
    """Run train.py for one seed, output to ``log``; returns the seed's record."""
    rec = dict(seed=seed, folder=folder, log=log, command=command, status="failed", returncode=None)
    slot = gpu_slots.get()
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if threads is not None:
            env["OMP_NUM_THREADS"] = threads
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            rec["gpu"] = env["CUDA_VISIBLE_DEVICES"]
        t0 = time.time()
        with open(log, "w") as f:
            try:
                if teachers:
                    prepare_students_only(teachers, folder)
            except (OSError, UserError) as exc:  # e.g. a full disk: this seed fails, the others go on
                f.write(f"copying the teachers from {teachers} failed: {exc}\n")
                rec["returncode"] = -1
                return rec
            f.write("$ " + " ".join(command) + "\n")
            f.flush()
            rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        rec["returncode"] = rc
        rec["wall_seconds"] = round(time.time() - t0, 2)
    finally:
        gpu_slots.put(slot)
    summary = read_summary(os.path.join(folder, SUMMARY_NAME)) if rec["returncode"] == 0 else None
    if is_complete(summary):
        fill_record(rec, summary)
    return rec


def fill_record(rec, summary):
    rec["status"] = "ok"
    rec["distill"] = summary
    d = derived(summary["models"])
    rec["student_minus_G_std"] = {k: d[k] for k in DELTA_METRICS}
    rec["gaussian_ratio"] = d["gaussian_ratio"]


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)\n"


# ---- printing ---------------------------------------------------------------------------------------------

def _f(v, spec, width):
    return (format(v, spec) if v is not None else "-").rjust(width)


def shares_devices(study):
    """Whether the study's runs went several at a time onto the same devices (--parallel above the --gpus given):
    their seconds then measure the sharing as much as the run."""
    parallel, gpus = study.get("parallel", 1), study.get("gpus")
    return parallel > 1 and (not gpus or len(gpus) < parallel)


def print_table(study, file=None):
    p = lambda *a: print(*a, file=file or sys.stdout)  # noqa: E731
    head = (f"{'seed':>6}{'G_perb':>8}{'G_drop':>8}{'G_std':>8}{'student':>8}{'N student':>11}{'N G_std':>10}"
            f"{'dPSNR':>8}{'dSSIM':>9}{'dLPIPS':>9}{'ratio':>8}{'stud s':>9}{'G_std s':>9}")
    p(f"seed study '{study['label']}' ({study['mode']}): student - G_std per seed")
    p(head)
    p("-" * len(head))
    for r in study["runs"]:
        if r["status"] != "ok":
            p(f"{r['seed']:>6}  FAILED (exit {r['returncode']}), log {r['log']}")
            continue
        m = r["distill"]["models"]
        d = r["student_minus_G_std"]
        p(f"{r['seed']:>6}" + "".join(_f(m[k].get("psnr"), ".2f", 8) for k in MODELS)
          + f"{m['student']['gaussians']:>11}{m['G_std']['gaussians']:>10}"
          + _f(d["psnr"], "+.3f", 8) + _f(d["ssim"], "+.4f", 9) + _f(d["lpips"], "+.4f", 9)
          + _f(r["gaussian_ratio"], ".3f", 8)
          + _f(m["student"].get("stage_seconds"), ".1f", 9) + _f(m["G_std"].get("stage_seconds"), ".1f", 9))
    if shares_devices(study):
        p(f"(stage seconds of runs {study['parallel']} at a time on shared devices: valid for quality, not as "
          f"timings)")
    p("")
    names = dict(psnr="student - G_std PSNR (dB)", ssim="student - G_std SSIM", lpips="student - G_std LPIPS",
                 gaussian_ratio="Gaussians student / G_std")
    for k in STAT_KEYS:
        s = study["stats"][k]
        v = "+.4f" if k in DELTA_METRICS else ".4f"
        if s is None:
            p(f"{names[k]:<28} not available for every seed")
        elif s["n"] < 2:
            p(f"{names[k]:<28} mean {s['mean']:{v}} (n=1: the interval needs 2 seeds)")
        else:
            p(f"{names[k]:<28} mean {s['mean']:{v}}  sd {s['sd']:.4f}  95% CI [{s['ci95_low']:{v}}, "
              f"{s['ci95_high']:{v}}]  n={s['n']}")


# ---- the CLI ----------------------------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the four-model Distilled-3DGS pipeline (train.py --num_models 4) for several seeds,\n"
                    "or several students on one set of teachers, and report student - G_std (PSNR, SSIM,\n"
                    "LPIPS, Gaussian ratio) per seed and as mean, sd and 95% confidence interval.\n"
                    "Everything after '--' is passed to train.py unchanged.",
        epilog="examples:\n"
               "  %(prog)s -s data/bonsai -o output/study_a --seeds 0 1 2 3 --parallel 4 --label a \\\n"
               "      -- --eval --steps_scale 0.25 --views_per_step 1 --num_max_ratio 0.6 --student_max_ratio 0.15\n"
               "  %(prog)s -s data/bonsai -o output/study_b --students_only output/study_a/seed_0 \\\n"
               "      --num_seeds 4 --parallel 4 -- --eval --steps_scale 0.25 --views_per_step 1 ...\n"
               "  %(prog)s -s data/bonsai -o output/study_tr --seeds 0 1 2 3 --parallel 2 --nproc_per_node 2 \\\n"
               "      --gpus 0,1 2,3 -- --eval --steps_scale 0.25 --views_per_step 1 --distill_start 16000\n"
               "  %(prog)s --compare output/study_a output/study_b",
        usage="%(prog)s -s SCENE -o OUT [--seeds S ... | --num_seeds N] [options] [-- TRAIN.PY FLAGS]\n"
              "       %(prog)s --compare A B\n"
              "       %(prog)s --pool STUDY STUDY ...")
    p.add_argument("-s", "--source_path", help="scene folder (as train.py -s)")
    p.add_argument("-o", "--out", help="study folder: one sub-folder seed_<s>/ per seed, and seed_study.json")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seeds", nargs="*", type=int, help="seeds to run (default 0 1 2 3)")
    g.add_argument("--num_seeds", type=int, help="run seeds 0 .. N-1")
    p.add_argument("--label", help="name of this variant in the tables and in --compare (default: the name "
                                   "of --out)")
    p.add_argument("--students_only", metavar="TEACHERS",
                   help="a train.py --num_models 4 output folder: train only students (--start 3) on its "
                        "point_cloud_0..2, copied into each seed's folder with its distill.json (G_std's "
                        "numbers come from there); or an earlier study's folder: each seed's student on that "
                        "seed's teachers (seed_<s>/), which --compare then pairs seed by seed; pass the "
                        "teachers' schedule flags (--steps_scale ...) after --")
    p.add_argument("--parallel", type=int, default=1, help="number of seeds run at once (default 1; several "
                                                            "fit on one large GPU); each gets its share of the "
                                                            "CPU cores as OMP_NUM_THREADS unless that is set")
    p.add_argument("--gpus", nargs="+", help="CUDA device ids to spread the parallel runs over, round-robin "
                                             "(CUDA_VISIBLE_DEVICES of each run; default: leave it as is); with "
                                             "--nproc_per_node N each entry is one run's N devices, e.g. 0,1 2,3")
    p.add_argument("--nproc_per_node", type=int, default=1, metavar="N",
                   help="run each seed under torchrun (torch.distributed.run --standalone) with N ranks on this "
                        "machine, as train.py documents for several GPUs (default 1: one plain process)")
    p.add_argument("--resume", action="store_true",
                   help="keep seeds whose seed_<s>/distill.json already has all four models; run the others")
    p.add_argument("--pool", nargs="+", metavar="STUDY",
                   help="several studies of one recipe as one sample (more seeds, or the same seeds run again: on a "
                        "GPU a seed does not reproduce a run): every run, then each statistic over all runs and over "
                        "the seeds with a seed's runs averaged; runs nothing")
    p.add_argument("--compare", nargs="+", metavar="A B",
                   help="compare two studies (seed_study.json files or their folders): B - A of the mean "
                        "student - G_std, with a 95%% interval: paired seed by seed when the two share their "
                        "teachers (one ran --students_only on the other, or both on the same folder), else Welch's; "
                        "several pairs (A1 B1 A2 B2 ..., e.g. one change on several scenes): each, then all their "
                        "seed pairs pooled; runs nothing")
    return p


def split_argv(argv):
    """(study flags, train.py flags): everything after the first '--' goes to train.py unchanged."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        k = argv.index("--")
        return argv[:k], argv[k + 1:]
    return argv, []


def check_train_flags(flags):
    """Parse the train.py flags as train.py would, so a typo stops here and not in every seed's run."""
    for f in flags:
        if f.split("=")[0] in OWNED_FLAGS:
            raise UserError(f"{f.split('=')[0]} after -- is set by the study itself (-s, -o/seed folders, "
                            f"--seeds, --students_only): leave it out of the train.py flags")
    import train  # noqa: PLC0415 (imports torch: only once the cheap checks passed)
    parser = train.build_parser()

    def fail(msg):
        raise UserError(f"train.py flags after --: {msg}")
    parser.error = fail
    parser.parse_args(["-s", "x"] + list(flags))


def seed_list(args):
    if args.num_seeds is not None:
        if args.num_seeds < 1:
            raise UserError(f"--num_seeds {args.num_seeds} must be at least 1")
        return list(range(args.num_seeds))
    if args.seeds is None:
        return [0, 1, 2, 3]
    if not args.seeds:
        raise UserError("--seeds needs at least one seed, e.g. --seeds 0 1 2 3")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed")
    return list(args.seeds)


def teachers_of(folder, seed):
    """The teachers folder for ``seed``: a study folder (seed_<s>/ sub-folders, e.g. an earlier seed study)
    gives each seed its own seed's teachers, so the two studies compare seed by seed (--compare pairs them);
    a train.py output folder gives every seed the same teachers."""
    per_seed = not os.path.isdir(os.path.join(folder, "point_cloud_0")) and os.path.isdir(seed_dir(folder, seed))
    return seed_dir(folder, seed) if per_seed else folder


def check_teachers(folder):
    if not os.path.isdir(folder):
        raise UserError(f"--students_only {folder} does not exist")
    for i in range(3):
        if not os.path.isdir(os.path.join(folder, f"point_cloud_{i}")):
            raise UserError(f"--students_only {folder} has no point_cloud_{i}/ ({TEACHERS[i]}): train the "
                            f"teachers there first (train.py --num_models 4)")
    summary = read_summary(os.path.join(folder, SUMMARY_NAME))
    if summary is None:
        raise UserError(f"--students_only {folder} has no {SUMMARY_NAME} (G_std's numbers come from it): train "
                        f"the teachers with train.py --num_models 4")
    if not isinstance(summary["models"].get("G_std"), dict):
        raise UserError(f"{os.path.join(folder, SUMMARY_NAME)} has no G_std entry")


def check_study(args, train_flags):
    """The study's flags checked before anything runs; returns (seeds, teachers folder or None, out folder)."""
    if not args.source_path:
        raise UserError("-s/--source_path is required: the scene folder to train on")
    if not os.path.isdir(args.source_path):
        raise UserError(f"scene folder {args.source_path} (-s) does not exist")
    if not args.out:
        raise UserError("-o/--out is required: the study folder (one sub-folder per seed)")
    seeds = seed_list(args)
    if args.parallel < 1:
        raise UserError(f"--parallel {args.parallel} must be at least 1")
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc_per_node {args.nproc_per_node} must be at least 1")
    for entry in args.gpus or ():
        if args.nproc_per_node > 1 and len(entry.split(",")) != args.nproc_per_node:
            raise UserError(f"--gpus {entry}: with --nproc_per_node {args.nproc_per_node} each entry names one "
                            f"run's {args.nproc_per_node} devices, comma-separated (e.g. --gpus 0,1 2,3)")
    teachers = os.path.abspath(args.students_only) if args.students_only else None
    if teachers:
        for seed in seeds:
            check_teachers(teachers_of(teachers, seed))
    check_train_flags(train_flags)
    out = os.path.abspath(args.out)
    if teachers and os.path.commonpath([teachers, out]) == out:
        raise UserError(f"--out {args.out} contains the teachers folder: pick another study folder")
    return seeds, teachers, out


def main(argv=None):
    own, train_flags = split_argv(argv)
    args = build_parser().parse_args(own)
    if args.compare:
        return compare(args.compare)
    if args.pool:
        return pool_studies(args.pool)
    seeds, teachers, out = check_study(args, train_flags)
    done = {s: read_summary(os.path.join(seed_dir(out, s), SUMMARY_NAME)) for s in seeds}
    done = {s: v for s, v in done.items() if is_complete(v)}
    if done and not args.resume:
        raise UserError(f"{args.out} already holds finished runs of seeds {' '.join(map(str, done))}: pass "
                        f"--resume to keep them, or pick another --out")
    os.makedirs(out, exist_ok=True)
    label = args.label or os.path.basename(out.rstrip(os.sep))
    scene = os.path.abspath(args.source_path)

    launcher = [sys.executable] if args.nproc_per_node == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc_per_node}",
        "--"]  # (-- : train.py's --start is not torchrun's)

    def command(seed):
        cmd = launcher + [TRAIN, "-s", scene, "-m", seed_dir(out, seed), "--num_models", "4", "--seed", str(seed)]
        return cmd + (["--start", "3"] if teachers else []) + list(train_flags)

    records = {}
    for s, summary in done.items():
        rec = dict(seed=s, folder=seed_dir(out, s), log=os.path.join(out, f"seed_{s}.log"), command=command(s),
                   status="failed", returncode=0, resumed=True)
        fill_record(rec, summary)
        records[s] = rec
        print(f"seed {s}: kept the finished run in {rec['folder']} (--resume)")
    todo = [s for s in seeds if s not in done]
    slots = queue.Queue()
    for k in range(args.parallel):
        slots.put(k)
    lock = threading.Lock()
    # (each rank of a torchrun run is a process of its own: the cores are shared between them all)
    threads = child_threads(args.parallel * args.nproc_per_node, os.environ, os.cpu_count() or 1)

    def job(seed):
        with lock:
            print(f"seed {seed}: training into {seed_dir(out, seed)} (log {os.path.join(out, f'seed_{seed}.log')})",
                  flush=True)
        rec = run_seed(seed, command(seed), seed_dir(out, seed), os.path.join(out, f"seed_{seed}.log"),
                       teachers and teachers_of(teachers, seed), slots, args.gpus, threads)
        with lock:
            if rec["status"] == "ok":
                m = rec["distill"]["models"]
                print(f"seed {seed}: done in {rec['wall_seconds']:.1f} s, student "
                      f"{_f(m['student'].get('psnr'), '.2f', 0)} dB, G_std {_f(m['G_std'].get('psnr'), '.2f', 0)} dB",
                      flush=True)
            else:
                why = (f"exit status {rec['returncode']}" if rec["returncode"] else
                       f"its {SUMMARY_NAME} does not have all four models")
                print(f"seed {seed}: FAILED ({why}); last lines of {rec['log']}:\n{log_tail(rec['log'])}",
                      file=sys.stderr, flush=True)
        return rec

    t0 = time.time()
    with ThreadPoolExecutor(max_workers=args.parallel) as workers:
        for rec in workers.map(job, todo):
            records[rec["seed"]] = rec
    runs = [records[s] for s in seeds]
    study = dict(label=label, mode="students_only" if teachers else "seeds", source_path=scene, out=out,
                 teachers=teachers, seeds=seeds, train_flags=list(train_flags),
                 study_command=[sys.executable, os.path.abspath(__file__)] + list(
                     sys.argv[1:] if argv is None else argv),
                 parallel=args.parallel, gpus=args.gpus, nproc_per_node=args.nproc_per_node,
                 wall_seconds=round(time.time() - t0, 2), runs=runs,
                 failed=[r["seed"] for r in runs if r["status"] != "ok"], stats=statistics(runs))
    with open(os.path.join(out, STUDY_NAME), "w") as f:
        json.dump(study, f, indent=2)
    print()
    print_table(study)
    print(f"\nwrote {os.path.join(out, STUDY_NAME)}")
    if study["failed"]:
        print(f"error: seed(s) {' '.join(map(str, study['failed']))} failed (logs in {out}); the statistics "
              f"cover the others", file=sys.stderr)
        return 1
    return 0


# ---- --compare --------------------------------------------------------------------------------------------

STAT_NAMES = dict(psnr="PSNR (dB)", ssim="SSIM", lpips="LPIPS", gaussian_ratio="Gaussian ratio")


def load_study(path, option="--compare"):
    if os.path.isdir(path):
        path = os.path.join(path, STUDY_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{option}: {path} does not exist (a {STUDY_NAME} or the folder holding one)")
    try:
        with open(path) as f:
            study = json.load(f)
    except ValueError as exc:
        raise UserError(f"{option}: {path} is not valid JSON ({exc})")
    if not isinstance(study, dict) or "runs" not in study:
        raise UserError(f"{option}: {path} is not a seed_study.py result")
    return study


def per_seed_values(study, key):
    ok = [r for r in study["runs"] if r["status"] == "ok"]
    vals = [stat_value(r, key) for r in ok]
    return vals if vals and all(v is not None for v in vals) else None


def teachers_source(study):
    """The folder a study's students took their teachers from: its own output for a full study, the
    --students_only folder otherwise (normalised, '' when unknown)."""
    src = study.get("teachers") if study.get("mode") == "students_only" else study.get("out")
    return os.path.normpath(src) if src else ""


def g_std_record(rec):
    """(PSNR, Gaussians) of the G_std a seed's student was measured against, or None when not recorded."""
    g = ((rec.get("distill") or {}).get("models") or {}).get("G_std") or {}
    return (g.get("psnr"), g.get("gaussians")) if g else None


def paired_seeds(a, b):
    """The seeds whose two students share their teachers (and so their G_std), or None: B ran --students_only on
    A's folder, A on B's, or both on the same folder, and the seed's G_std is the same in both records (a folder
    trained again, or a study from another machine at the same path, is not). Only there can B - A be taken seed
    by seed."""
    if not teachers_source(a) or teachers_source(a) != teachers_source(b):
        return None
    ok_a = {r["seed"]: r for r in a["runs"] if r["status"] == "ok"}
    common = [r["seed"] for r in b["runs"] if r["status"] == "ok" and r["seed"] in ok_a
              and g_std_record(r) == g_std_record(ok_a[r["seed"]])]
    return common or None


def compare_studies(a, b):
    """For each statistic: the two studies' summaries and B - A: the paired mean difference with its t
    interval over the seeds whose students share their teachers (paired_seeds), else welch(A values, B values)."""
    out = {}
    seeds = paired_seeds(a, b)
    for k in STAT_KEYS:
        va, vb = per_seed_values(a, k), per_seed_values(b, k)
        if va is None or vb is None:
            out[k] = None
            continue
        res = dict(a=summarize(va), b=summarize(vb))
        if seeds:
            ba, bb = ({r["seed"]: stat_value(r, k) for r in study["runs"] if r["status"] == "ok"} for study in (a, b))
            d = summarize([bb[s] - ba[s] for s in seeds])
            res.update(b_minus_a=dict(diff=d["mean"], ci95_low=d["ci95_low"], ci95_high=d["ci95_high"], df=None,
                                      n=d["n"]), test="paired")
        else:
            res.update(b_minus_a=welch(va, vb), test="welch")
        out[k] = res
    return out


def compare(paths):
    """--compare A B [A B ...]: each pair's table; with several pairs, their seed pairs pooled."""
    if len(paths) % 2:
        raise UserError(f"--compare takes pairs of studies (A B, or A1 B1 A2 B2 ...): got {len(paths)} paths")
    pairs = [(load_study(a), load_study(b)) for a, b in zip(paths[::2], paths[1::2])]
    for (a, b), path_a, path_b in zip(pairs, paths[::2], paths[1::2]):
        print_comparison(a, b, path_a, path_b)
    if len(pairs) > 1:
        print_pooled(pairs)
    return 0


def pooled_differences(pairs, key):
    """B - A seed by seed over every pair (each paired: its two studies share their teachers), or None when a
    pair is not paired or lacks the statistic."""
    diffs = []
    for a, b in pairs:
        seeds = paired_seeds(a, b)
        if not seeds:
            return None
        ba, bb = ({r["seed"]: stat_value(r, key) for r in study["runs"] if r["status"] == "ok"} for study in (a, b))
        if any(ba[s] is None or bb[s] is None for s in seeds):
            return None
        diffs += [bb[s] - ba[s] for s in seeds]
    return diffs


def print_pooled(pairs):
    print(f"B - A pooled over the {len(pairs)} comparisons (every seed pair counts once)")
    for k in STAT_KEYS:
        diffs = pooled_differences(pairs, k)
        if diffs is None:
            print(f"{STAT_NAMES[k]:<16}not available: every comparison must be paired (the two share their "
                  f"teachers) and have it for every seed")
            continue
        d = summarize(diffs)
        ci = f"[{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]" if d["ci95_low"] is not None else "needs 2 seed pairs"
        print(f"{STAT_NAMES[k]:<16}{d['mean']:>+10.4f}   {ci} paired over {d['n']} seeds")


def pooled_statistics(studies):
    """For each statistic over the successful runs of ``studies`` (one recipe): summarize() over every run
    ("runs") and over the seeds with each seed's runs averaged ("seeds"); None where a run lacks it."""
    runs = [r for st in studies for r in st["runs"]]
    over_runs = statistics(runs)  # (the successful runs, as one study's)
    out = {}
    for k in STAT_KEYS:
        if over_runs[k] is None:
            out[k] = None
            continue
        by_seed = {}
        for r in runs:
            if r["status"] == "ok":
                by_seed.setdefault(r["seed"], []).append(stat_value(r, k))
        out[k] = dict(runs=over_runs[k], seeds=summarize([sum(vs) / len(vs) for vs in by_seed.values()]))
    return out


def pool_studies(paths):
    """--pool S1 S2 ...: every run of the studies, then pooled_statistics (a note when their train.py flags
    differ: pooling is meant for one recipe)."""
    studies = [load_study(p, "--pool") for p in paths]
    print(f"{'study':<24}{'seed':>6}{'dPSNR':>9}{'dSSIM':>9}{'dLPIPS':>9}{'ratio':>8}")
    for st, path in zip(studies, paths):
        for r in st["runs"]:
            if r["status"] != "ok":
                continue
            d = r["student_minus_G_std"]
            print(f"{(st.get('label') or path)[:23]:<24}{r['seed']:>6}{_f(d['psnr'], '+.3f', 9)}"
                  f"{_f(d['ssim'], '+.4f', 9)}{_f(d['lpips'], '+.4f', 9)}{_f(r['gaussian_ratio'], '.3f', 8)}")
    flags = [" ".join(st.get("train_flags") or ()) for st in studies]
    if len(set(flags)) > 1:
        print("note: the studies' train.py flags differ (" + "; ".join(f"{p}: {f or 'none'}" for p, f in
                                                                        zip(paths, flags)) + ")")
    print("student - G_std (and the Gaussian ratio): mean [95% CI] over every run, and over the seeds with a seed's "
          "runs averaged")
    for k, res in pooled_statistics(studies).items():
        if res is None:
            print(f"{STAT_NAMES[k]:<16}not available for every run")
            continue
        line, sign = f"{STAT_NAMES[k]:<16}", "+" if k in DELTA_METRICS else ""
        for what in ("runs", "seeds"):
            d = res[what]
            ci = (f"[{d['ci95_low']:{sign}.4f}, {d['ci95_high']:{sign}.4f}]" if d["ci95_low"] is not None
                  else "(needs 2)")
            line += f"  over {d['n']} {what}: {d['mean']:{sign}.4f} {ci}"
        print(line)
    return 0


def print_comparison(a, b, path_a, path_b):
    res = compare_studies(a, b)
    la, lb = a.get("label") or "A", b.get("label") or "B"
    if la == lb:
        la, lb = f"A ({la})", f"B ({lb})"
    print(f"B - A of the mean student - G_std: A = '{la}' ({path_a}), B = '{lb}' ({path_b})")
    head = f"{'':<16}{'A mean':>10}{'n':>4}{'B mean':>10}{'n':>4}{'B - A':>10}   95% CI"
    print(head)
    print("-" * (len(head) + 14))
    for k in STAT_KEYS:
        r = res[k]
        if r is None:
            print(f"{STAT_NAMES[k]:<16}not available for every seed of both studies")
            continue
        w = r["b_minus_a"]
        ci = (f"[{w['ci95_low']:+.4f}, {w['ci95_high']:+.4f}]" + (f" (df {w['df']:.1f})" if w["df"] else "")
              if w["ci95_low"] is not None else "needs 2 seeds in each study")
        ci += f" paired over {w['n']} seeds" if r["test"] == "paired" else " Welch"
        v = ">+10.4f" if k in DELTA_METRICS else ">10.4f"
        print(f"{STAT_NAMES[k]:<16}{r['a']['mean']:{v}}{r['a']['n']:>4}{r['b']['mean']:{v}}{r['b']['n']:>4}"
              f"{w['diff']:>+10.4f}   {ci}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
