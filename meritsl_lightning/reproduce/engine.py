"""Run a plan of steps as subprocesses: keyed run folders, resume, dependencies, parallel device slots.

A step is one command line (``python -m meritsl_lightning fit --config ...``). ``{name[field]}`` in its
arguments or environment is replaced by a field of the product of the step it depends on under ``name``
(e.g. ``{stage1_text[checkpoint]}``), ``{run_dir}`` / ``{run_parent}`` / ``{run_name}`` by its own folder.
The folder is ``<parent>/<prefix>-<key>``, the key a hash of the command line as written and of the files it
names and the products it consumes (files up to 1 MiB by content, larger ones by size and modification time):
the same config finds the same folder; a step whose input was redone with other bytes gets a new one, while a
byte-identical redo (a deterministic CPU run) keeps it. A step is finished when its marker
says so and its ``done_files`` exist; such a step is skipped, anything else is (re)done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "reproduce_run.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the runs import the same meritsl_lightning as the reproduction
KEY_LENGTH = 10
_SMALL_FILE = 1 << 20  # files up to this size are keyed by content, larger ones by size and time
_LOG_TAIL = 2000
_PLACEHOLDER = re.compile(r"\{(\w+)(?:\[(\w+)\])?\}")


def fit_product(run_dir: Path) -> dict[str, Any]:
    """What a ``meritsl fit`` run gives later steps: its best-validation checkpoint (and its test metrics)."""
    metrics = run_dir / "test_metrics.json"
    if metrics.is_file():
        record = json.loads(metrics.read_text())
        return {"checkpoint": record.get("best_checkpoint") or str(run_dir / "checkpoints" / "best.ckpt"), "test": record.get("test", {})}
    return {"checkpoint": str(run_dir / "checkpoints" / "best.ckpt")}


@dataclass
class Step:
    """One command of a plan (see the module docstring for the ``{name[field]}`` template fields)."""

    id: str
    argv: list[str]  # arguments of the Python interpreter, e.g. ["-m", "meritsl_lightning", "fit", ...]
    parent: Path  # the run folder is <parent>/<prefix>-<key>
    prefix: str
    deps: dict[str, str] = field(default_factory=dict)  # template name in ``{name[field]}`` -> step id
    done_files: tuple[str, ...] = ("test_metrics.json",)
    product: Callable[[Path], dict[str, Any]] = fit_product
    fresh: bool = True  # an unfinished folder is cleared first (fits); False: the command resumes by itself
    env: dict[str, str] = field(default_factory=dict)
    unkeyed: tuple[str, ...] = ()  # argv items that do not change the result (e.g. a logging config)
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in the marker (corpus, stage, seed, ...)


@dataclass
class Outcome:
    step: Step
    status: str  # finished | skipped (finished earlier) | failed | blocked (an input step failed)
    run_dir: Path | None = None
    product: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""
    log: Path | None = None


def file_key(path: Path) -> Any:
    """Content hash of a small file, size and modification time of a large one."""
    st = path.stat()
    if st.st_size <= _SMALL_FILE:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return [st.st_size, st.st_mtime_ns]


def _named_files(values: list[str]) -> dict[str, Any]:
    files = {}
    for value in values:
        text = value.split("=", 1)[-1].removeprefix("care:")
        if text and len(text) < 4096 and Path(text).is_file():
            files[text] = file_key(Path(text))
    return files


def step_key(step: Step, inputs: dict[str, dict[str, Any]]) -> str:
    """The hash naming a step's folder: its command line as written, the files it names, its inputs."""
    argv = [a for a in step.argv if a not in step.unkeyed]
    material = {
        "argv": argv,
        "env": step.env,
        "files": _named_files(argv + list(step.env.values())),
        "inputs": {name: {k: v for k, v in product.items() if k != "test"} for name, product in inputs.items()},
        "input_files": {name: _named_files([str(v) for v in product.values() if isinstance(v, str)]) for name, product in inputs.items()},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


def substitute(text: str, fields: dict[str, Any]) -> str:
    """Replace ``{name}`` and ``{name[field]}`` for the names in ``fields``; any other braces stay as written."""

    def one(match: re.Match) -> str:
        name, key = match.group(1), match.group(2)
        if name not in fields:
            return match.group(0)
        value = fields[name]
        if key is not None:
            if not isinstance(value, dict) or key not in value:
                raise KeyError(f"{match.group(0)}: the step {name!r} gives no {key!r}")
            value = value[key]
        return str(value)

    return _PLACEHOLDER.sub(one, text)


def read_marker(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_finished(step: Step, run_dir: Path) -> bool:
    marker = read_marker(run_dir)
    return bool(marker and marker.get("status") == "finished" and all((run_dir / f).exists() for f in step.done_files))


class Engine:
    """Runs steps in dependency order, up to ``parallel`` at once, each with its own device slot."""

    def __init__(
        self,
        python: str = sys.executable,
        parallel: int = 1,
        devices: list[str] | None = None,
        log_dir: Path | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.python = python
        self.parallel = max(1, parallel)
        if devices is None and parallel > 1:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            devices = [d for d in visible.split(",") if d] or [str(i) for i in range(parallel)]
        self.devices = devices  # None: the runs inherit the environment's devices
        self.log_dir = log_dir
        self.echo = echo
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False

    # -- planning ---------------------------------------------------------------------------------------
    def resolve(self, step: Step, outcomes: dict[str, Outcome]) -> tuple[Path, list[str], dict[str, str], str]:
        inputs = {name: outcomes[dep].product for name, dep in step.deps.items()}
        key = step_key(step, inputs)
        run_dir = step.parent / f"{step.prefix}-{key}"
        fields = {**inputs, "run_dir": str(run_dir), "run_parent": str(run_dir.parent), "run_name": run_dir.name}
        argv = [substitute(a, fields) for a in step.argv]
        env = {k: substitute(v, fields) for k, v in step.env.items()}
        return run_dir, argv, env, key

    # -- running ----------------------------------------------------------------------------------------
    def run(self, steps: list[Step]) -> dict[str, Outcome]:
        ids = {s.id for s in steps}
        for s in steps:
            unknown = set(s.deps.values()) - ids
            if unknown:
                raise ValueError(f"step {s.id} depends on unknown steps {sorted(unknown)}")
        pending = {s.id: s for s in steps}
        outcomes: dict[str, Outcome] = {}
        running: dict[Future, tuple[Step, str | None]] = {}
        free: list[str | None] = list(self.devices[: self.parallel]) if self.devices else [None] * self.parallel
        pool = ThreadPoolExecutor(max_workers=self.parallel)
        try:
            while pending or running:
                for sid, step in list(pending.items()):
                    if any(dep not in outcomes for dep in step.deps.values()):
                        continue
                    bad = [dep for dep in step.deps.values() if outcomes[dep].status in ("failed", "blocked")]
                    if bad:
                        outcomes[sid] = Outcome(step, "blocked", message=f"not run: {', '.join(bad)} failed")
                        self.echo(f"[reproduce] {sid}: not run ({', '.join(bad)} failed)")
                        del pending[sid]
                        continue
                    run_dir, argv, env, key = self.resolve(step, outcomes)
                    if is_finished(step, run_dir):
                        outcomes[sid] = Outcome(step, "skipped", run_dir, step.product(run_dir))
                        self.echo(f"[reproduce] {sid}: finished earlier ({run_dir}), skipped")
                        del pending[sid]
                        continue
                    if not free:
                        break
                    device = free.pop(0)
                    running[pool.submit(self._run_one, step, run_dir, argv, env, key, device)] = (step, device)
                    del pending[sid]
                if not running:
                    if pending:  # nothing runnable and nothing running: cannot happen with known deps
                        raise RuntimeError(f"steps left that can never run: {sorted(pending)}")
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    step, device = running.pop(future)
                    outcomes[step.id] = future.result()
                    free.append(device)
        except BaseException:
            self.stop()
            raise
        finally:
            pool.shutdown(wait=True)
        return outcomes

    def stop(self) -> None:
        """Terminate the runs this engine started (on Ctrl-C or SIGTERM); their folders stay unfinished."""
        self._stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _run_one(self, step: Step, run_dir: Path, argv: list[str], env: dict[str, str], key: str, device: str | None) -> Outcome:
        if step.fresh and run_dir.exists():
            shutil.rmtree(run_dir)  # an unfinished fit: start it again from scratch
        log = (self.log_dir or run_dir.parent) / f"{step.id.replace('/', '_')}-{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **env}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        if device is not None:
            full_env["CUDA_VISIBLE_DEVICES"] = device
        where = f" on device {device}" if device is not None else ""
        self.echo(f"[reproduce] {step.id}: running{where} -> {run_dir}")
        started = time.perf_counter()
        with open(log, "w") as out:
            out.write(" ".join([self.python, *argv]) + "\n")
            out.flush()
            proc = subprocess.Popen([self.python, *argv], stdout=out, stderr=subprocess.STDOUT, env=full_env)
            with self._lock:
                self._procs[step.id] = proc
            rc, cpu = _wait(proc)
            with self._lock:
                self._procs.pop(step.id, None)
        seconds = time.perf_counter() - started
        run_dir.mkdir(parents=True, exist_ok=True)
        missing = [f for f in step.done_files if not (run_dir / f).exists()]
        # Lightning stops a fit early and exits 0 on SIGTERM: a stopped run is never taken as finished
        status = "finished" if rc == 0 and not missing and not self._stopping else "failed"
        if self._stopping:
            message = "interrupted (the reproduction was stopped); redone when it is started again"
        elif rc != 0:
            message = f"exit status {rc}"
        elif missing:
            message = f"exit status 0 but no {', '.join(missing)} in {run_dir}"
        else:
            message = ""
        marker = {
            "status": status,
            "step": step.id,
            "key": key,
            "argv": argv,
            "env": env,
            "seconds": round(seconds, 1),
            "cpu_seconds": None if cpu is None else round(cpu, 1),
            "finished_at": time.time(),
            "returncode": rc,
            "message": message,
            "log": str(log),
            **step.meta,
        }
        if status == "failed":
            marker["log_tail"] = log.read_text(errors="replace")[-_LOG_TAIL:]
        tmp = run_dir / f".{MARKER}.tmp"
        tmp.write_text(json.dumps(marker, indent=1))
        os.replace(tmp, run_dir / MARKER)
        if status == "finished":
            product = step.product(run_dir)
            self.echo(f"[reproduce] {step.id}: finished in {seconds:.0f} s{_score(product)}")
            return Outcome(step, "finished", run_dir, product, seconds, log=log)
        self.echo(f"[reproduce] {step.id}: FAILED ({message}; log: {log})")
        return Outcome(step, "failed", run_dir, {}, seconds, message, log)


def _wait(proc: subprocess.Popen) -> tuple[int, float | None]:
    """The exit status and the CPU time (user + system) the run used, for the timing record."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere (stop() polling during an interrupt)
        return (proc.returncode if proc.returncode is not None else -1), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _score(product: dict[str, Any]) -> str:
    test = product.get("test") or {}
    value = test.get("test/weighted_f1")
    return f" (test weighted F1 {value:.4f})" if isinstance(value, int | float) else ""
