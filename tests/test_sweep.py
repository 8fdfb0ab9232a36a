"""`nil sweep`: sweep files expanded and validated, Ray runs, retries, re-runs, shared stage 1, results."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from nil.config import load_config
from nil.errors import ConfigError
from nil.scale import expand, references, worker
from nil.scale import spec as sfile
from nil.scale import sweep as sw

ROOT = Path(__file__).resolve().parents[1]

BASE = {"robot": {"name": "ant"}, "skill": "walking", "reward": {"use_video": False}}


def _spec(**kw) -> sfile.SweepSpec:
    return sfile.parse_sweep({"base": BASE, **kw}, "test")


# ----------------------------------------------------------------------------------------- no Ray needed


def test_expansion_names_groups_and_configs(tmp_path: Path) -> None:
    spec = _spec(
        axes={"seed": [0, 1], "generator.seed": [3, 4], "skill": ["walking fast"]},
        variants=[{"name": "full"}, {"name": "no_iou", "set": {"reward.beta": 0.0}}],
    )
    skills = expand.expand_sweep(spec, tmp_path)
    assert len(skills) == 2 * 2 * 2
    names = [s.name for s in skills]
    assert len(set(names)) == 8
    # two axes end in "seed": both get their full key; spaces become underscores
    assert "no_iou__seed-1__generator_seed-4__skill-walking_fast" in names
    again = [s.name for s in expand.expand_sweep(spec, tmp_path)]
    assert names == again  # stable across runs
    by = {s.name: s for s in skills}
    s = by["no_iou__seed-1__generator_seed-4__skill-walking_fast"]
    assert s.config.reward.beta == 0 and s.config.seed == 1 and s.config.generator.seed == 4
    assert s.config.skill == "walking fast" and s.config.reward.use_video is False
    assert by["full__seed-1__generator_seed-4__skill-walking_fast"].config.reward.beta == 1.0
    assert s.directory == tmp_path / s.name
    # each skill's config is resolved as `nil init` writes it: the robot's and the learner's values filled in
    assert s.config.robot.control_hz is not None and s.config.rl.target_entropy is not None
    assert s.config.derived.fields.get("robot.control_hz") == "robot.name"
    # stage 1 depends on the generator seed but not on the RL seed or the reward
    keys = {s.stage1_key for s in skills}
    assert len(keys) == 2
    same = [k.stage1_key for k in skills if k.config.generator.seed == 4]
    assert len(set(same)) == 1 and len(same) == 4
    assert all(k.reference_dir.parent == tmp_path / references.REFERENCES_DIR for k in skills)


def test_stage1_grouping_is_the_bundle_cache_key(tmp_path: Path) -> None:
    """Skills grouped together really share a reference: the bundle's own cache agrees with the grouping."""
    from nil.config import parse_config
    from nil.paths import SkillPaths
    from nil.reference.bundle import CACHE_KEY_SECTIONS, generate_reference

    assert references.STAGE1_FIELDS == CACHE_KEY_SECTIONS
    tiny = {
        "robot": {"name": "ant", "control_hz": 25},
        "camera": {"width": 48, "height": 48},
        "generator": {"name": "synthetic", "seconds": 0.4},
        "reward": {"use_video": False},
    }
    a = parse_config(tiny, "a")
    # differs in stage 2 only: same group, and the bundle finds its reference cached
    b = parse_config(
        {**tiny, "seed": 7, "reward": {"use_video": False, "eta": 0.3}, "rl": {"gamma": 0.9}}, "b"
    )
    c = parse_config({**tiny, "generator": {"name": "synthetic", "seconds": 0.4, "seed": 3}}, "c")
    assert references.stage1_key(a) == references.stage1_key(b) != references.stage1_key(c)
    paths = SkillPaths(tmp_path / "skill")
    assert generate_reference(paths, a)["cached"] is False
    assert generate_reference(paths, b)["cached"] is True
    assert generate_reference(paths, c)["cached"] is False


def test_base_from_path_preset_and_set(tmp_path: Path) -> None:
    (tmp_path / "skill.yaml").write_text("robot: {name: ant}\nskill: hopping\nrl: {total_steps: 77}\n")
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "base: skill.yaml\npreset: cpu\nset: {rl.batch_size: 16}\naxes: {reward.zeta: [0.5]}\n"
    )
    spec = sfile.load_sweep(sweep_file)
    (s,) = expand.expand_sweep(spec, tmp_path / "out", sweep_dir=tmp_path)
    assert s.name == "zeta-0.5"
    assert (s.config.skill, s.config.rl.total_steps, s.config.rl.batch_size) == ("hopping", 77, 16)
    assert s.config.reward.zeta == 0.5 and s.config.reward.use_video is False  # from the cpu preset


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (
            {"variants": [{"name": "full"}, {"name": "no_iou", "set": {"reward.use_iuo": False}}]},
            ["reward.use_iuo", "unknown key", "variant no_iou"],
        ),
        ({"axes": {"rewrd.zeta": [1.0]}}, ["rewrd", "unknown key", "zeta-1.0"]),
        ({"axes": {"reward.zeta": ["high"]}}, ["reward.zeta", "valid number"]),
        ({"axis": {"seed": [0]}}, ["axis", "unknown key"]),
        ({"axes": {"seed": []}}, ["axes.seed", "at least 1 item"]),
        ({"max_retries": -1}, ["max_retries"]),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, ["unique", "a"]),
        (
            {"variants": [{"name": "v", "set": {"seed": 1}}], "axes": {"seed": [0]}},
            ["variant v", "seed", "axis"],
        ),
        ({"axes": {"skill.x": [1]}}, ["skill.x", "not a config section"]),
        ({"resources": {"num_cpu": 1}}, ["resources.num_cpu", "unknown key"]),
        ({"axes": {"robot.name": ["ant", "no_such_robot"]}}, ["skill robot-no_such_robot", "unknown robot"]),
    ],
)
def test_bad_sweep_fails_up_front_naming_the_key(tmp_path: Path, data: dict, needles: list[str]) -> None:
    f = tmp_path / "bad.yaml"
    import yaml

    f.write_text(yaml.safe_dump({"base": BASE, **data}))
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as ei:
        sw.run_sweep(f, out, task="does.not:matter")
    for n in needles:
        assert n in str(ei.value), (n, str(ei.value))
    assert not out.exists()  # nothing was written or launched


def test_examples_expand() -> None:
    spec = sfile.load_sweep(ROOT / "examples" / "ablation.yaml")
    skills = expand.expand_sweep(spec, Path("/tmp/x"), sweep_dir=ROOT / "examples")
    variants = {s.variant for s in skills}
    assert variants == {"full", "no_reg", "no_iou", "no_video", "only_reg", "only_iou", "only_video"}
    by_v = {s.variant: s.config.reward for s in skills}
    assert (by_v["full"].use_video, by_v["full"].beta > 0, by_v["full"].eta > 0) == (True, True, True)
    assert (by_v["only_iou"].use_video, by_v["only_iou"].beta > 0, by_v["only_iou"].eta > 0) == (
        False,
        True,
        False,
    )
    assert (by_v["no_video"].use_video, by_v["no_video"].beta > 0, by_v["no_video"].eta > 0) == (
        False,
        True,
        True,
    )
    assert all(s.config.robot.name == "unitree_h1" for s in skills)
    assert len({s.stage1_key for s in skills}) == 1  # one generated video serves every arm and RL seed
    demo = sfile.load_sweep(ROOT / "examples" / "sweep_demo.yaml")
    assert len(expand.expand_sweep(demo, Path("/tmp/x"), sweep_dir=ROOT / "examples")) >= 2


# ----------------------------------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the whole module (starting Ray costs ~10-20 s here)."""
    pytest.importorskip("ray")
    import ray

    started = sw._start_ray(None, 2, 0)
    yield ray
    if started:
        ray.shutdown()


def _fake_tasks():
    """A stand-in reference generator and a skill task that fails on purpose; defined in a closure so
    Ray pickles them by value (the tests folder is not importable in Ray workers)."""

    def fake_reference(paths, cfg):
        import json as _json
        import time as _time

        paths.reference.mkdir(parents=True, exist_ok=True)
        paths.frame0.write_bytes(b"png")
        paths.video.write_bytes(f"video seed {cfg.generator.seed}".encode())
        paths.meta.write_text(_json.dumps({"seed": cfg.generator.seed}))
        with open(paths.root.parent / "generated.txt", "a") as f:
            f.write(f"{paths.root.name} {_time.time()}\n")
        return {"seed": cfg.generator.seed}

    def fake_skill(directory, steps=None, force=False):
        from pathlib import Path as _P

        from nil.config import load_config as _load

        d = _P(directory)
        cfg = _load(d)
        with open(d / "calls.txt", "a") as f:
            f.write("call\n")
        calls = len((d / "calls.txt").read_text().splitlines())
        assert (d / "reference" / "video.mp4").read_bytes() == f"video seed {cfg.generator.seed}".encode()
        if cfg.seed == 1 and not (d.parent / "heal").exists():
            raise RuntimeError(f"forced failure of {d.name}")
        if cfg.seed == 2 and calls == 1:
            raise ValueError("flaky first attempt")
        return {"return": {"mean": 10.0 * cfg.seed + cfg.generator.seed}, "steps": steps, "calls": calls}

    return fake_reference, fake_skill


def _csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "sweep.csv") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def test_failures_isolated_retried_and_rerun_skips(tmp_path: Path, local_ray) -> None:
    fake_reference, fake_skill = _fake_tasks()
    spec = _spec(axes={"seed": [0, 1, 2], "generator.seed": [5, 6]}, max_retries=1, steps=123)
    out = tmp_path / "sw"
    run = sw.run_sweep(spec, out, task=fake_skill, reference_task=fake_reference, progress=False)
    res = {r.name: r for r in run.results}
    assert len(res) == 6
    for g in (5, 6):
        ok, bad, flaky = (
            res[f"seed-0__generator_seed-{g}"],
            res[f"seed-1__generator_seed-{g}"],
            res[f"seed-2__generator_seed-{g}"],
        )
        assert (ok.status, ok.attempts, ok.metrics["return"]["mean"], ok.metrics["steps"]) == (
            "done",
            1,
            g,
            123,
        )
        assert (bad.status, bad.attempts) == ("failed", 2)  # first try + one retry
        assert bad.error == f"RuntimeError: forced failure of seed-1__generator_seed-{g}"
        assert "forced failure" in (bad.directory / worker.LOG_FILE).read_text()  # the traceback is kept
        assert (flaky.status, flaky.attempts, flaky.metrics["calls"]) == ("done", 2, 2)
    # stage 1 ran once per distinct reference, and every skill holds a link to it
    gens = (out / references.REFERENCES_DIR / "generated.txt").read_text().splitlines()
    assert len(gens) == 2
    for r in run.results:
        s = next(k for k in expand.expand_sweep(spec, out) if k.name == r.name)
        assert os.path.samefile(
            r.directory / "reference" / "video.mp4", s.reference_dir / "reference" / "video.mp4"
        )
        assert load_config(r.directory).seed == s.config.seed
    # results: every skill in the CSV and the index page
    rows = _csv(out)
    assert set(rows) == set(res)
    assert rows["seed-1__generator_seed-6"]["status"] == "failed"
    assert rows["seed-1__generator_seed-6"]["error"].startswith("RuntimeError: forced failure")
    assert rows["seed-2__generator_seed-6"]["return.mean"] == "26"
    assert (rows["seed-0__generator_seed-5"]["seed"], rows["seed-0__generator_seed-5"]["generator.seed"]) == (
        "0",
        "5",
    )
    page = (out / "index.html").read_text()
    for name in res:
        assert f">{name}</a>" in page
    assert (
        "<script>" in page
        and "http" not in page.split("<body>")[1].split("<table")[0] + page.split("<script>")[1]
    )

    # Second run: finished skills are skipped, the failed ones run again (and now succeed).
    (out / "heal").touch()
    run2 = sw.run_sweep(spec, out, task=fake_skill, reference_task=fake_reference, progress=False)
    res2 = {r.name: r for r in run2.results}
    for g in (5, 6):
        for seed in (0, 2):
            r = res2[f"seed-{seed}__generator_seed-{g}"]
            assert r.status == "cached" and r.metrics == res[r.name].metrics
        assert res2[f"seed-1__generator_seed-{g}"].status == "done"
    calls = {n: len((out / n / "calls.txt").read_text().splitlines()) for n in res}
    assert calls == {
        f"seed-{s}__generator_seed-{g}": {0: 1, 1: 3, 2: 2}[s] for s in (0, 1, 2) for g in (5, 6)
    }
    assert {r["status"] for r in _csv(out).values()} == {"done", "cached"}

    # A third run has nothing to do and starts no task (the reference is not regenerated either).
    run3 = sw.run_sweep(spec, out, task=fake_skill, reference_task=fake_reference, progress=False)
    assert all(r.status == "cached" for r in run3.results)
    assert (
        len((out / references.REFERENCES_DIR / "generated.txt").read_text().splitlines()) == 4
    )  # run 2 regenerated 2


def test_error_text_unwraps() -> None:
    class Wrapped(Exception):
        def __init__(self, cause):
            super().__init__("wrapper text")
            self.cause = cause

    assert sw._error_text(Wrapped(OSError("x\nmore"))) == "OSError: x"
    assert sw._error_text(ValueError("bad\nline 2")) == "ValueError: bad"
    assert re.match(r"^RuntimeError$", sw._error_text(RuntimeError()))
    assert json.loads(json.dumps(worker._jsonable({"a": Path("/x")}))) == {"a": "/x"}


# The pipeline test's tiny skill (tests/test_pipeline.py), as a sweep base: ~15-30 s per skill on 2 cores.
TINY_BASE = {
    "robot": {"name": "ant", "control_hz": 25},
    "skill": "walking",
    "camera": {"width": 40, "height": 40},
    "generator": {"name": "synthetic", "seconds": 0.6},
    "segmenter": {"name": "flow"},
    "reward": {"use_video": False},
    "rl": {
        "algo": "sac",
        "total_steps": 160,
        "warmup_steps": 64,
        "batch_size": 32,
        "actor_width": 32,
        "critic_width": 32,
        "eval_interval": 160,
        "eval_episodes": 1,
        "checkpoint_interval": 80,
        "video_interval": 100000,
        "device": "cpu",
    },
    "sim": {"num_envs": 2, "num_workers": 0},
}


@pytest.mark.slow
def test_real_pipeline_sweep_shares_stage1(tmp_path: Path, local_ray) -> None:
    """The default task (nil.evaluation.pipeline.run_skill) on 4 tiny skills: 2 references x 2 reward arms."""
    spec = sfile.parse_sweep(
        {
            "base": TINY_BASE,
            "axes": {"generator.gait_hz": [1.5, 2.5]},
            "variants": [{"name": "iou_reg"}, {"name": "only_iou", "set": {"reward.eta": 0.0}}],
            "max_retries": 0,
        },
        "test",
    )
    out = tmp_path / "sw"
    run = sw.run_sweep(spec, out, progress=False)
    res = {r.name: r for r in run.results}
    assert sorted(res) == [
        "iou_reg__gait_hz-1.5",
        "iou_reg__gait_hz-2.5",
        "only_iou__gait_hz-1.5",
        "only_iou__gait_hz-2.5",
    ]
    for r in run.results:
        assert r.status == "done", (r.name, r.error, (r.directory / worker.LOG_FILE).read_text()[-3000:])
        assert r.attempts == 1 and r.report is not None and r.report.name == "report.html"
        assert 0.0 <= r.metrics["trained"]["mean_iou"] <= 1.0 and r.metrics["policy"]["step"] >= 160
        # the skill's own stage-1 cache accepted the shared reference: it did not generate again
        assert r.metrics["stages"]["generate"] == "skipped (cached)"
        assert r.metrics["stages"]["segment"] == "ran"
    # two references (one per gait), each generated once and linked into both reward arms
    refs = sorted((out / references.REFERENCES_DIR).iterdir())
    assert len(refs) == 2 and len(run.references) == 2
    for gait in ("1.5", "2.5"):
        a, b = out / f"iou_reg__gait_hz-{gait}", out / f"only_iou__gait_hz-{gait}"
        assert os.path.samefile(a / "reference" / "retimed.mp4", b / "reference" / "retimed.mp4")
        assert json.loads((a / "reference" / "meta.json").read_text())["cache_params"]["generator_params"][
            "cpg"
        ]
    ia = json.loads((out / "iou_reg__gait_hz-1.5" / "reference" / "meta.json").read_text())["cache_key"]
    ib = json.loads((out / "iou_reg__gait_hz-2.5" / "reference" / "meta.json").read_text())["cache_key"]
    assert ia != ib
    # the reward arms really differ: no regulariser in only_iou
    assert load_config(out / "only_iou__gait_hz-1.5").reward.eta == 0
    rows = _csv(out)
    assert set(rows) == set(res) and all(rows[n]["status"] == "done" for n in rows)
    assert float(rows["iou_reg__gait_hz-1.5"]["trained.mean_iou"]) == pytest.approx(
        res["iou_reg__gait_hz-1.5"].metrics["trained"]["mean_iou"], rel=1e-5
    )
    assert rows["iou_reg__gait_hz-2.5"]["report"] == "iou_reg__gait_hz-2.5/eval/report.html"
    page = (out / "index.html").read_text()
    for name in res:
        assert f'<a href="{name}/eval/report.html">{name}</a>' in page

    # A second run skips every finished skill without starting a task.
    stamp = {n: (out / n / "eval" / "metrics.json").stat().st_mtime_ns for n in res}
    run2 = sw.run_sweep(spec, out, progress=False)
    assert [r.status for r in run2.results] == ["cached"] * 4 and not run2.references
    assert {n: (out / n / "eval" / "metrics.json").stat().st_mtime_ns for n in res} == stamp
    assert {r["status"] for r in _csv(out).values()} == {"cached"}
