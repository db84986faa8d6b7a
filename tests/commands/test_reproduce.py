"""`meritsl reproduce table1`: the generated reproduction end to end (2 seeds, 1 epoch), its aggregate
recomputed here from the run folders, resume, crashes recorded, bad input, the pre-training chain's wiring."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from scipy import stats

from meritsl_lightning.commands import reproduce
from meritsl_lightning.commands.tabulate import main as tabulate
from meritsl_lightning.reproduce.aggregate import build_table, load_runs
from meritsl_lightning.reproduce.engine import MARKER, Engine, Step
from meritsl_lightning.reproduce.tables import TABLE1, TABLES

STAGES = [s.name for s in TABLE1.stages]
CORPUS_VARIABLES = ("IEMOCAP_ROOT", "MELD_ROOT", "MOSI_ROOT", "CMU_MOSI_ROOT", "TEXT_ENCODER", "SPEECH_ENCODER",
                    "MSP_PODCAST_ROOT", "LLM_MODEL", "LLM_BASE_URL")  # fmt: skip
GENERATED = ["table1", "--generated", "--corpora", "iemocap", "--seeds", "0", "1", "--generated-size", "4"]
TINY = ["--", "--trainer.max_epochs=1"]


@pytest.fixture(autouse=True)
def _no_user_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CORPUS_VARIABLES:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The generated IEMOCAP reproduction, 2 seeds x 5 stages, 1 epoch each (one subprocess per run)."""
    out = tmp_path_factory.mktemp("table1")
    with pytest.MonkeyPatch.context() as mp:
        for var in CORPUS_VARIABLES:
            mp.delenv(var, raising=False)
        code, printed = _main([*GENERATED, "--out", str(out), *TINY])
    return out, code, printed


def _main(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = reproduce.main(argv)
    return code, buffer.getvalue()


def _run_folders(out: Path) -> dict[tuple[str, int], Path]:
    """(stage, seed) -> the run folder this test finds on its own: the finished one with test metrics."""
    found = {}
    for metrics in sorted((out / "runs" / "iemocap").glob("*/seed*/run-*/test_metrics.json")):
        stage, seed = metrics.parents[2].name, int(metrics.parents[1].name.removeprefix("seed"))
        assert (stage, seed) not in found, f"two finished runs for {stage} seed {seed}"
        found[(stage, seed)] = metrics.parent
    return found


def test_generated_reproduction_writes_the_table_from_its_run_folders(reproduction: tuple[Path, int, str]) -> None:
    out, code, printed = reproduction
    assert code == 0, printed
    runs = _run_folders(out)
    assert sorted(runs) == sorted((stage, seed) for stage in STAGES for seed in (0, 1))
    table = json.loads((out / "table1.json").read_text())
    assert table["failed"] == []
    assert [(r["corpus"], r["protocol"], r["stage"]) for r in table["rows"]] == [("iemocap", "iemocap4", s) for s in STAGES]
    for row in table["rows"]:
        # recomputed independently: each seed's test weighted F1 read from its own run folder
        scores = [json.loads((runs[(row["stage"], seed)] / "test_metrics.json").read_text())["test"]["test/weighted_f1"] for seed in (0, 1)]
        mean, std = statistics.fmean(scores), statistics.stdev(scores)
        half = stats.t.ppf(0.975, 1) * std / math.sqrt(2)
        assert row["seeds"] == [0, 1] and row["n"] == 2
        assert row["test_weighted_f1"] == pytest.approx(scores)
        assert row["mean"] == pytest.approx(mean) and row["std"] == pytest.approx(std)
        assert row["ci95"] == pytest.approx([max(0.0, mean - half), min(1.0, mean + half)])
        assert all(0.0 <= v <= 1.0 for v in scores)
        assert row["paper"] == TABLE1.paper[("iemocap", "iemocap4", row["stage"])]
        assert row["delta"] == pytest.approx(mean - row["paper"])
        assert "without LLM pre-training" in row["text_encoder"] and "not CARE" in row["speech_encoder"]
    md = (out / "table1.md").read_text()
    assert "without LLM pre-training" in md and "Failed runs" in md
    assert (out / "table1.csv").read_text().count("\n") == 1 + len(STAGES)
    assert (out / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # `meritsl tabulate OUT` recomputes the same numbers
    assert tabulate([str(out), "--json", str(out / "tabulated.json")]) == 0
    assert json.loads((out / "tabulated.json").read_text()) == {k: table[k] for k in ("rows", "failed")}


def test_each_seed_chain_reads_its_own_earlier_checkpoints(reproduction: tuple[Path, int, str]) -> None:
    out, code, printed = reproduction
    assert code == 0, printed
    runs = _run_folders(out)
    for seed in (0, 1):
        for stage, args in {"stage2_text": {"stage1_checkpoint": "stage1_text"}, "stage2_audio": {"stage1_checkpoint": "stage1_audio"},
                            "stage3": {"stage2_text_checkpoint": "stage2_text", "stage2_audio_checkpoint": "stage2_audio"}}.items():  # fmt: skip
            config = yaml.safe_load((runs[(stage, seed)] / "config.yaml").read_text())
            assert config["seed_everything"] == seed
            for arg, upstream in args.items():
                assert Path(config["model"]["init_args"][arg]).parent.parent == runs[(upstream, seed)]
    assert (out / "runs" / "iemocap" / "stage3" / "seed1" / "best.ckpt").is_symlink()  # per-seed pointer


def test_resume_redoes_only_the_missing_runs(reproduction: tuple[Path, int, str]) -> None:
    """A run killed before its test finished is redone; on CPU the redo is deterministic, so its checkpoint has
    the same bytes and the Stage III run trained on it is still valid and kept (keys hash inputs by content)."""
    out, code, printed = reproduction
    assert code == 0, printed
    runs = _run_folders(out)
    redone = runs[("stage2_text", 1)]
    best = Path(json.loads((redone / "test_metrics.json").read_text())["best_checkpoint"])
    before = hashlib.sha256(best.read_bytes()).hexdigest()
    (redone / "test_metrics.json").unlink()  # as if killed before its test finished
    code, printed = _main([*GENERATED, "--out", str(out), *TINY])
    assert code == 0, printed
    ran = sorted(line.split(": running")[0].removeprefix("[reproduce] ") for line in printed.splitlines() if ": running" in line)
    assert ran == ["iemocap/stage2_text/seed1"], printed
    assert hashlib.sha256(best.read_bytes()).hexdigest() == before  # the deterministic redo: same checkpoint bytes
    assert printed.count("finished earlier") == 1 + 2 * len(STAGES) - 1  # the corpus step and the 9 other runs
    table = json.loads((out / "table1.json").read_text())
    assert all(r["n"] == 2 for r in table["rows"]) and table["failed"] == []


def test_fig4_reuses_the_hierarchy_runs_and_trains_the_joint_variants_on_the_same_stage1(reproduction: tuple[Path, int, str]) -> None:
    """`reproduce fig4` in the Table 1 folder: Stages I-III are the same runs (skipped), the three end-to-end
    variants train on each seed's own Stage I checkpoints, and the table holds all eight rows."""
    out, code, printed = reproduction
    assert code == 0, printed
    code, printed = _main(["fig4", *GENERATED[1:], "--out", str(out), *TINY])
    assert code == 0, printed
    ran = sorted(line.split(": running")[0].removeprefix("[reproduce] ") for line in printed.splitlines() if ": running" in line)
    assert ran == sorted(f"iemocap/{v}/seed{s}" for v in ("joint", "joint_deep", "joint_text") for s in (0, 1)), printed
    hierarchy = _run_folders(out)
    for seed in (0, 1):
        configs = {v: yaml.safe_load(next((out / "runs" / "iemocap" / v / f"seed{seed}").glob("run-*/config.yaml")).read_text())
                   for v in ("joint", "joint_deep", "joint_text")}  # fmt: skip
        for variant, config in configs.items():
            init = config["model"]["init_args"]
            assert config["seed_everything"] == seed
            assert Path(init["stage1_audio_checkpoint"]).parent.parent == hierarchy[("stage1_audio", seed)]
            if variant != "joint_text":
                assert Path(init["stage1_text_checkpoint"]).parent.parent == hierarchy[("stage1_text", seed)]
        assert configs["joint"]["model"]["init_args"]["modality_loss_weight"] == 0.0
        assert configs["joint_deep"]["model"]["init_args"]["modality_loss_weight"] == 1.0
        assert configs["joint_text"]["model"]["class_path"].endswith("JointTextFinetuneModule")
    fig4 = json.loads((out / "fig4.json").read_text())
    assert [r["stage"] for r in fig4["rows"]] == [*STAGES, "joint", "joint_deep", "joint_text"]
    assert all(r["n"] == 2 and r["paper"] is None for r in fig4["rows"]) and fig4["failed"] == []
    table1 = {r["stage"]: r for r in json.loads((out / "table1.json").read_text())["rows"]}
    assert all(r["test_weighted_f1"] == table1[r["stage"]]["test_weighted_f1"] for r in fig4["rows"] if r["stage"] in STAGES)
    assert (out / "fig4.png").read_bytes()[:4] == b"\x89PNG"
    # both tables share the run folders, and `meritsl tabulate OUT` recomputes each from its own plan
    assert tabulate([str(out), "--json", str(out / "both.json")]) == 0
    both = json.loads((out / "both.json").read_text())
    assert both["fig4"] == {k: fig4[k] for k in ("rows", "failed")}
    assert both["table1"] == {k: v for k, v in json.loads((out / "table1.json").read_text()).items() if k in ("rows", "failed")}


def test_oof_plan_chains_fold_models_into_stage2_and_stage3_of_the_same_seed(tmp_path: Path) -> None:
    """`reproduce oof`: per corpus and seed, `meritsl oof` on that seed's Stage I run (K = 2 generated), Stage II
    reading its oof.json with the same Stage I checkpoint, Stage III on those two; the fold steps are no rows."""
    code, printed = _main(["oof", "--generated", "--corpora", "meld", "--seeds", "3", "--out", str(tmp_path), "--dry-run"])
    assert code == 0, printed
    args = reproduce.build_parser().parse_args(["oof", "--generated", "--corpora", "meld", "--seeds", "3"])
    args.overrides = []
    steps = {s.id: s for s in reproduce.plan(TABLES["oof"], args, tmp_path)[0]}
    oof_text = steps["meld/oof_text/seed3"]
    assert oof_text.argv[2] == "oof" and "--full" in oof_text.argv and "{stage1_text[checkpoint]}" in oof_text.argv
    assert oof_text.argv[-1] == "--folds=2" and oof_text.deps["stage1_text"] == "meld/stage1_text/seed3"
    assert "table" not in oof_text.meta and oof_text.done_files == ("oof.json",) and not oof_text.fresh
    stage2 = steps["meld/stage2_text_oof/seed3"]
    assert "--model.init_args.stage1_oof={oof_text[oof]}" in stage2.argv
    assert "--model.init_args.stage1_checkpoint={stage1_text[checkpoint]}" in stage2.argv
    assert stage2.deps["oof_text"] == "meld/oof_text/seed3" and stage2.meta["table"] == "oof"
    stage3 = steps["meld/stage3_oof/seed3"]
    assert stage3.deps["stage2_text_oof"] == "meld/stage2_text_oof/seed3" and stage3.deps["stage2_audio_oof"] == "meld/stage2_audio_oof/seed3"
    assert Path(stage3.argv[stage3.argv.index("--config") + 1]).name == "meld_stage3.yaml"


UPSTREAM = """
import json, sys
from pathlib import Path
run = Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
(run / "best.ckpt").write_text((run.parents[3] / "weights.txt").read_text())  # an input the key cannot see
(run / "test_metrics.json").write_text(json.dumps({"best_checkpoint": str(run / "best.ckpt"), "test": {}}))
"""

DOWNSTREAM = """
import json, sys
from pathlib import Path
run = Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
(run / "test_metrics.json").write_text(json.dumps({"test": {"test/weighted_f1": 0.5}}))
"""


def test_a_redone_input_reruns_its_dependents_only_when_its_content_changed(tmp_path: Path) -> None:
    """Engine level: the dependent's key hashes the upstream checkpoint's content, so an identical redo keeps it
    and a different one gives it a new folder (never a stale result on a changed input)."""
    source = tmp_path / "weights.txt"

    def steps() -> list[Step]:
        up = _python_step(tmp_path, "up/seed0", UPSTREAM)
        up.argv.append("{run_dir}")
        down = _python_step(tmp_path, "down/seed0", DOWNSTREAM, deps={"up": "up/seed0"}, stage="stage2_text")
        down.argv += ["{run_dir}", "{up[checkpoint]}"]
        return [up, down]

    def run() -> dict[str, str]:
        return {k: o.status for k, o in Engine(log_dir=tmp_path / "logs", echo=lambda _: None).run(steps()).items()}

    source.write_text("first")
    assert run() == {"up/seed0": "finished", "down/seed0": "finished"}
    up_dir = next((tmp_path / "runs").glob("iemocap/stage1_text/up_seed0-*"))
    (up_dir / "test_metrics.json").unlink()  # killed before its test: redone, with the same bytes
    assert run() == {"up/seed0": "finished", "down/seed0": "skipped"}
    (up_dir / "test_metrics.json").unlink()
    source.write_text("second")  # redone, and this time its checkpoint differs (a nondeterministic redo)
    assert run() == {"up/seed0": "finished", "down/seed0": "finished"}
    assert len(list((tmp_path / "runs").glob("iemocap/stage2_text/down_seed0-*"))) == 2


def _python_step(out: Path, name: str, code: str, deps: dict[str, str] | None = None, stage: str = "stage1_text") -> Step:
    return Step(
        id=name, argv=["-c", textwrap.dedent(code)], parent=out / "runs" / "iemocap" / stage, prefix=name.replace("/", "_"),
        deps=deps or {},
        meta={"table": "table1", "corpus": "iemocap", "protocol": "iemocap4", "stage": stage, "seed": int(name[-1]),
              "text_encoder": "t", "speech_encoder": "s"},
    )  # fmt: skip


WRITE_METRICS = """
import json, os, sys
from pathlib import Path
run = Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
(run / "device.txt").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
(run / "test_metrics.json").write_text(json.dumps({"best_checkpoint": str(run / "best.ckpt"), "test": {"test/weighted_f1": SCORE}}))
"""


def test_a_crashed_run_is_recorded_and_its_dependents_are_not_run(tmp_path: Path) -> None:
    """Engine level, with stand-in runs: a crash is listed (never fatal, never dropped), parallel slots get their
    own CUDA_VISIBLE_DEVICES, and a step that needs the crashed one is listed as not run."""
    steps = []
    for seed, score in ((0, "0.5"), (1, "0.7")):
        step = _python_step(tmp_path, f"a/seed{seed}", WRITE_METRICS.replace("SCORE", score))
        step.argv.append("{run_dir}")
        steps.append(step)
    steps.append(_python_step(tmp_path, "b/seed2", "import sys; print('boom'); sys.exit(3)"))
    steps.append(_python_step(tmp_path, "c/seed2", "pass", deps={"b": "b/seed2"}, stage="stage2_text"))
    outcomes = Engine(python=sys.executable, parallel=2, devices=["5", "7"], log_dir=tmp_path / "logs", echo=lambda _: None).run(steps)
    assert {k: o.status for k, o in outcomes.items()} == {"a/seed0": "finished", "a/seed1": "finished", "b/seed2": "failed", "c/seed2": "blocked"}
    assert {(o.run_dir / "device.txt").read_text() for k, o in outcomes.items() if k.startswith("a/")} <= {"5", "7"}
    marker = json.loads((outcomes["b/seed2"].run_dir / MARKER).read_text())
    assert marker["status"] == "failed" and marker["returncode"] == 3 and "boom" in marker["log_tail"]
    table = build_table(load_runs(tmp_path, "test/weighted_f1"), TABLE1)
    assert [(r["stage"], r["seeds"], r["test_weighted_f1"]) for r in table["rows"]] == [("stage1_text", [0, 1], [0.5, 0.7])]
    assert [(f["seed"], f["reason"]) for f in table["failed"]] == [(2, "exit status 3")]
    # started again: the finished runs are skipped, the crashed one is tried again
    again = Engine(python=sys.executable, log_dir=tmp_path / "logs", echo=lambda _: None).run(steps)
    assert [again[k].status for k in ("a/seed0", "a/seed1", "b/seed2")] == ["skipped", "skipped", "failed"]


HOLD = """
import sys, time
from pathlib import Path
while Path(sys.argv[2]).exists():
    time.sleep(0.1)
"""

KILLABLE = """
import signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.commands.test_reproduce import interrupted_steps
from meritsl_lightning.reproduce.engine import Engine

def stop(*_):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, stop)
try:
    Engine(log_dir=Path(sys.argv[1]) / "logs").run(interrupted_steps(Path(sys.argv[1])))
except KeyboardInterrupt:
    sys.exit(130)
"""


def interrupted_steps(out: Path) -> list[Step]:
    """Two stand-in runs: the first finishes, the second waits while ``out/hold`` exists."""
    first = _python_step(out, "a/seed0", WRITE_METRICS.replace("SCORE", "0.5"))
    second = _python_step(out, "a/seed1", HOLD + WRITE_METRICS.replace("SCORE", "0.6"))
    first.argv.append("{run_dir}")
    second.argv += ["{run_dir}", str(out / "hold")]
    return [first, second]


def test_a_killed_reproduction_resumes_with_the_unfinished_runs_only(tmp_path: Path) -> None:
    import subprocess
    import time

    (tmp_path / "hold").touch()
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path), str(repo)])
    deadline = time.monotonic() + 60
    while not list((tmp_path / "logs").glob("a_seed1-*.log")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(15)  # SIGTERM while the second run is in flight
    assert proc.wait(timeout=60) == 130
    second = list((tmp_path / "runs").glob("iemocap/stage1_text/a_seed1-*"))
    assert not any((d / "test_metrics.json").exists() for d in second)  # the in-flight run was stopped
    (tmp_path / "hold").unlink()
    echoed: list[str] = []
    outcomes = Engine(log_dir=tmp_path / "logs", echo=echoed.append).run(interrupted_steps(tmp_path))
    assert {k: o.status for k, o in outcomes.items()} == {"a/seed0": "skipped", "a/seed1": "finished"}
    assert (outcomes["a/seed1"].run_dir / "test_metrics.json").is_file()


# -- bad input: one line naming the variable and the path, exit status 2, before any training ------------------
def test_a_folder_that_is_not_the_corpus_stops_before_training(tmp_path: Path) -> None:
    (tmp_path / "not_iemocap").mkdir()
    code, printed = _main(["table1", "--iemocap-root", str(tmp_path / "not_iemocap"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert f"IEMOCAP_ROOT={tmp_path / 'not_iemocap'} is not a iemocap corpus folder" in printed
    assert "Traceback" not in printed and len(printed.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_text_encoder_checkpoint_stops_before_training(tmp_path: Path) -> None:
    from tests.fixtures.iemocap_layout import write_iemocap

    corpus = write_iemocap(tmp_path / "data")
    missing = tmp_path / "pretrain" / "best.ckpt"
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--text-encoder", str(missing), "--out", str(tmp_path / "out")])
    assert code == 2
    assert printed.strip() == f"meritsl reproduce: error: TEXT_ENCODER={missing}: no such checkpoint file"
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--speech-encoder", f"care:{missing}", "--out", str(tmp_path / "out")])
    assert code == 2 and f"SPEECH_ENCODER=care:{missing}" in printed
    assert not (tmp_path / "out").exists()


def test_corpora_without_their_variable_are_skipped_and_named(tmp_path: Path) -> None:
    from tests.fixtures.iemocap_layout import write_iemocap

    corpus = write_iemocap(tmp_path / "data")
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--seeds", "3", "--dry-run"])
    assert code == 0
    assert "meld: skipped (MELD_ROOT not set)" in printed and "cmu_mosi: skipped (MOSI_ROOT not set)" in printed
    assert "roberta-large (without LLM pre-training)" in printed and "microsoft/wavlm-base" in printed
    planned = [line.split(":")[0] for line in printed.splitlines() if line.startswith("iemocap/")]
    assert planned == [f"iemocap/{s}/seed3" for s in STAGES]
    assert f"--config {TABLE1.config('iemocap', 'stage3', False)}" in printed and "--seed_everything=3" in printed
    code, printed = _main(["table1", "--out", str(tmp_path / "none")])
    assert code == 2 and "no corpus to run" in printed


def test_pretraining_chain_runs_first_and_feeds_stage1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MSP_PODCAST_ROOT and an LLM: prepare -> transcribe -> pseudo-label -> text -> CARE pre-training, whose
    checkpoints Stage I starts from; the API key stays in the environment (only its variable's name is passed)."""
    from tests.fixtures.iemocap_layout import write_iemocap
    from tests.fixtures.msp_layout import write_msp

    corpus = write_iemocap(tmp_path / "data")
    msp = write_msp(tmp_path / "msp")
    monkeypatch.setenv("MY_LLM_KEY", "sk-not-to-be-written-anywhere")
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--msp-podcast-root", str(msp), "--llm-model", "gpt-3.5-turbo",
                           "--llm-base-url", "http://localhost:9/v1", "--llm-api-key-env", "MY_LLM_KEY", "--seeds", "0", "--dry-run"])  # fmt: skip
    assert code == 0, printed
    assert "sk-not-to-be-written" not in printed and "--api-key-env MY_LLM_KEY" in printed
    ids = [line.split(":")[0] for line in printed.splitlines() if line and not line.startswith((" ", "["))]
    assert ids[:5] == ["pretrain/prepare", "pretrain/transcribe", "pretrain/pseudo_label", "pretrain/text", "pretrain/care"]
    stage1_text = printed.split("iemocap/stage1_text/seed0:")[1].split("\n")[:2]
    assert "pretrain/text" in stage1_text[0] and "--model.init_args.model_name_or_path={text_pretrain[checkpoint]}" in stage1_text[1]
    stage1_audio = printed.split("iemocap/stage1_audio/seed0:")[1].split("\n")[:2]
    assert "pretrain/care" in stage1_audio[0] and "--model.init_args.speech_encoder=care:{care_pretrain[checkpoint]}" in stage1_audio[1]
    assert "pretrain_msp_podcast.yaml" in printed and "pretrain_care_msp_podcast.yaml" in printed
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--msp-podcast-root", str(msp), "--dry-run"])
    assert code == 2 and "no LLM (LLM_MODEL)" in printed


def test_wandb_config_follows_each_stage_config_or_is_skipped_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.iemocap_layout import write_iemocap

    corpus = write_iemocap(tmp_path / "data")
    monkeypatch.setattr(reproduce, "WANDB_CONFIG", tmp_path / "absent.yaml")
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--seeds", "0", "--wandb", "--dry-run"])
    assert code == 0 and "absent.yaml does not exist" in printed and "absent.yaml --seed" not in printed
    present = tmp_path / "wandb.yaml"
    present.write_text("{}\n")
    monkeypatch.setattr(reproduce, "WANDB_CONFIG", present)
    code, printed = _main(["table1", "--iemocap-root", str(corpus), "--seeds", "0", "--wandb", "--dry-run"])
    assert code == 0 and printed.count(f"iemocap_stage1_text.yaml --config {present} --seed_everything=0") == 1


@pytest.mark.slow
def test_generated_pretraining_chain_feeds_stage1(tmp_path: Path) -> None:
    """The whole chain offline: generated MSP-Podcast -> tiny Whisper -> tiny LLM labels -> text and CARE
    pre-training -> Stage I text and speech start from the two checkpoints."""
    out = tmp_path / "out"
    code, printed = _main(["table1", "--generated", "--pretraining", "--corpora", "iemocap", "--seeds", "0", "--generated-size", "4",
                           "--stages", "stage1_text", "stage1_audio", "--out", str(out), *TINY])  # fmt: skip
    assert code == 0, printed
    table = json.loads((out / "table1.json").read_text())
    assert [r["stage"] for r in table["rows"]] == ["stage1_text", "stage1_audio"]
    assert all("LLM pre-trained by this reproduction" in r["text_encoder"] and "CARE" in r["speech_encoder"] for r in table["rows"])
    runs = _run_folders(out)
    text = json.loads((runs[("stage1_text", 0)] / "test_metrics.json").read_text())
    speech = json.loads((runs[("stage1_audio", 0)] / "test_metrics.json").read_text())
    assert text["encoders"]["text"]["llm_pretrained"] is True and text["encoders"]["text"]["path"].startswith(str(out / "pretrain"))
    assert speech["encoders"]["speech"]["spec"].startswith(f"care:{out / 'pretrain'}")
