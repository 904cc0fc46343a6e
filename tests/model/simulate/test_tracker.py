"""The live-storage tracker on hand-made op sequences whose bytes are known."""

from __future__ import annotations

import torch

from vram_ml.model.simulate.tracker import CUDA_ROUNDING, LiveStorageTracker, tensors_in


def test_counts_new_storages_once_and_drops_freed_ones():
    tracker = LiveStorageTracker()
    with tracker:
        a = torch.ones(1000)  # 4000 bytes
        view = a[10:20]  # same storage: not counted again
        b = a * 2  # 4000 bytes
        del b
        c = torch.ones(250, dtype=torch.float64)  # 2000 bytes
    assert tracker.peak.peak_tensor_bytes == 8000
    assert tracker.current == 6000
    del a, view, c
    assert tracker.current == 0
    assert tracker.peak.breakdown == {"activations": 8000}


def test_rounds_like_the_cuda_allocator():
    tracker = LiveStorageTracker()
    with tracker:
        kept = [torch.ones(1, dtype=torch.uint8) for _ in range(3)]
    assert tracker.peak.peak_tensor_bytes == 3 == tracker.current  # still alive: still counted
    assert tracker.peak.peak_rounded_bytes == 3 * CUDA_ROUNDING
    del kept
    assert tracker.current == 0


def test_model_state_and_retagging():
    tracker = LiveStorageTracker()
    weight = torch.zeros(100)  # 400 bytes
    tracker.track(weight, "weights")
    tracker.observe(phase="setup")
    grad = torch.zeros(50)
    tracker.track(grad, "temporaries")
    tracker.retag(grad, "gradients")
    tracker.observe()
    assert tracker.peak.breakdown == {"weights": 400, "gradients": 200}
    assert tracker.peak.peak_tensor_bytes == 600


def test_hidden_scratch_is_added_at_its_op_only():
    def scratch(func, args, kwargs, out):
        return 10_000 if str(func) == "aten.mm.default" else 0

    tracker = LiveStorageTracker(hidden_bytes=scratch)
    with tracker:
        x = torch.ones(10, 10)  # 400
        y = x @ x  # 400 + 10_000 scratch at this op
        del y
        z = torch.ones(1000)  # 4000
    assert tracker.peak.peak_tensor_bytes == 400 + 400 + 10_000
    assert tracker.peak.hidden_bytes == 10_000
    assert tracker.peak.breakdown["temporaries"] == 10_000
    assert tracker.current == 400 + 4000  # x and z alive, y freed, the scratch gone
    del x, z
    assert tracker.current == 0


def test_logits_are_recognised_by_shape():
    tracker = LiveStorageTracker(vocab_size=50, tokens=4)
    with tracker:
        logits = torch.ones(2, 2, 50)
        hidden = torch.ones(2, 2, 8)
    assert tracker.peak.breakdown == {"logits": 800, "activations": 128}
    assert tracker.terms["logits"] == 800  # alive, under its term
    del logits, hidden
    assert tracker.terms["logits"] == 0 and tracker.current == 0


def test_phases_gradients_and_optimizer_state():
    model = torch.nn.Linear(8, 4, bias=False)  # 128 bytes of weight
    optimizer = torch.optim.AdamW(model.parameters(), foreach=True)
    tracker = LiveStorageTracker()
    tracker.track(model.weight, "weights")
    handles = tracker.watch_training(model, optimizer)
    with tracker:
        for _ in range(2):
            model(torch.ones(3, 8)).sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for handle in handles:
        handle.remove()
    assert tracker.terms["optimizer"] >= 2 * 128  # exp_avg, exp_avg_sq (+ step scalars)
    assert tracker.terms["gradients"] == 0  # set to None after the step
    assert tracker.step == 3  # two optimizer steps seen
    # The peak is inside the first step: weights + gradient + new states + foreach temporaries.
    assert tracker.peak.phase == "optimizer"
    assert tracker.peak.breakdown["gradients"] == 128
    assert tracker.peak.breakdown["temporaries"] > 0


def test_tensors_in_walks_nested_arguments():
    a, b, c = torch.ones(1), torch.ones(2), torch.ones(3)
    found = tensors_in(((a, [b, 1]), {"x": c, "y": "s"}))
    assert {id(t) for t in found} == {id(a), id(b), id(c)}
