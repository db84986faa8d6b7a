"""CMU-MOSI regression metrics against hand-computed values, batching and two-process (gloo) DDP."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from meritsl_lightning.metrics import MOSIRegressionMetrics, acc7_class, has0_binary, non0_binary

PREDS = torch.tensor([2.6, -0.4, 0.0, 1.2, -2.1, 0.4])
GOLD = torch.tensor([3.0, 0.0, -1.0, 1.4, -2.6, -0.2])
# Worked by hand (see the comments in test_hand_computed_values).
EXPECTED = {
    "mae": 3.1 / 6,
    "pearson": 14.69 / (12.448333333 * 18.7) ** 0.5,
    "acc2_has0": 3 / 6,
    "f1_has0": (3 * 4 / 7 + 3 * 0.4) / 6,
    "acc2_non0": 4 / 5,
    "f1_non0": 0.8,
    "acc7": 4 / 6,
}


def _values(metrics: MOSIRegressionMetrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.compute().items()}


def test_hand_computed_values() -> None:
    # has-0: preds >= 0 -> 1 0 1 1 0 1, gold >= 0 -> 1 1 0 1 0 0: 3 of 6 agree.
    #   class 1: TP 2, FP 2, FN 1 -> F1 4/7; class 0: TP 1, FP 1, FN 2 -> F1 0.4; 3 gold items each.
    # non-0: gold item 2 (0.0) dropped; preds > 0 -> 1 0 1 0 1, gold > 0 -> 1 0 1 0 0: 4 of 5 agree;
    #   class 1: P 2/3, R 1 -> 0.8; class 0: P 1, R 2/3 -> 0.8.
    # acc7: preds -> 3 0 0 1 -2 0, gold -> 3 0 -1 1 -3 0: 4 of 6 agree.
    # Pearson: sum dp*dt = 14.69, sum dp^2 = 12.448333, sum dt^2 = 18.7.
    metrics = MOSIRegressionMetrics()
    metrics.update(PREDS, GOLD)
    values = _values(metrics)
    assert set(values) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        assert values[name] == pytest.approx(expected, abs=1e-5), name


def test_batches_shapes_and_prefix() -> None:
    metrics = MOSIRegressionMetrics(prefix="test/")
    metrics.update(PREDS[:4].reshape(4, 1), GOLD[:4].reshape(4, 1))  # [N, 1] model outputs work too
    metrics.update(PREDS[4:], GOLD[4:])
    values = _values(metrics)
    assert values["test/mae"] == pytest.approx(EXPECTED["mae"], abs=1e-6)
    assert values["test/pearson"] == pytest.approx(EXPECTED["pearson"], abs=1e-5)
    assert values["test/f1_has0"] == pytest.approx(EXPECTED["f1_has0"], abs=1e-6)
    metrics.reset()
    metrics.update(torch.tensor([1.0, -1.0]), torch.tensor([1.0, -1.0]))
    assert _values(metrics)["test/acc7"] == 1.0


def test_members_are_never_merged_into_compute_groups() -> None:
    # No zero gold scores: has-0 and non-0 accuracies see the same counts after this batch, but must stay
    # separate metrics, or the later zero would be counted by both.
    metrics = MOSIRegressionMetrics()
    metrics.update(torch.tensor([1.0, -1.0]), torch.tensor([1.0, -1.0]))
    metrics.update(torch.tensor([-0.5]), torch.tensor([0.0]))
    values = _values(metrics)
    assert values["acc2_has0"] == pytest.approx(2 / 3)
    assert values["acc2_non0"] == 1.0


def test_binarisations_and_acc7_classes() -> None:
    scores = torch.tensor([-3.4, -2.5, -0.5, -0.2, 0.0, 0.2, 0.5, 1.5, 2.5, 3.2])
    assert has0_binary(scores).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert non0_binary(scores).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    # clip to [-3, 3], round half to even (numpy's rule, as in the MMSA evaluation), shift to 0..6
    assert acc7_class(scores).tolist() == [0, 1, 3, 3, 3, 3, 3, 5, 5, 6]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:  # type: ignore[no-untyped-def]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metrics = MOSIRegressionMetrics()
        # rank 0 gets 4 items, rank 1 gets 2: uneven shards must still give the full-data values
        part = slice(0, 4) if rank == 0 else slice(4, 6)
        metrics.update(PREDS[part], GOLD[part])
        queue.put((rank, {k: float(v) for k, v in metrics.compute().items()}))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_single_process() -> None:
    ctx = mp.get_context("fork")  # no re-import of torch in the children (CPU only, tiny tensors)
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    for rank in (0, 1):
        for name, expected in EXPECTED.items():
            assert results[rank][name] == pytest.approx(expected, abs=1e-5), (rank, name)
