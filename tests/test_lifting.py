"""Algorithm 1: each stage does its job, and a short run on real MNIST-hard images learns."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mistlib import lifting
from mistlib.data import MNISTHard
from mistlib.experiments import dataset_tensors
from mistlib.extract import suppressed, topk_extract
from mistlib.lifting import (
    LiftingConfig,
    LiftingTrainer,
    TrainingLog,
    lift_target,
    random_windows,
)
from mistlib.model import MIST, MISTConfig
from mistlib.refine import refine_keypoints
from mistlib.training import step_generator

# A slim MIST (narrow heatmap network) so that a few dozen CPU steps run in seconds.
# eq. (6) as written and no suppression: the settings the thresholds below were measured with
SLIM = MISTConfig(heatmap_channels=8, heatmap_blocks=2, task_width=8, composite="sum", nms=1)


@pytest.fixture(scope="module")
def hard32():
    """32 real MNIST-hard training images with their digit boxes."""
    images, boxes, _, _ = dataset_tensors(MNISTHard("train", size=32, seed=0))
    return images, boxes


def _trainer(**overrides) -> LiftingTrainer:
    torch.manual_seed(0)
    config = LiftingConfig(**{"steps": 40, "batch_size": 16, "device": "cpu", "log_every": 10, **overrides})
    return LiftingTrainer(MIST(SLIM), "reconstruct", config)


def test_point_target_is_e_k_inverse_and_gaussian_target_keeps_its_peaks():
    scales = torch.tensor([16.0, 20.0, 25.0])
    kp = torch.tensor([[[10.0, 12.0, 18.0], [50.0, 60.0, 25.0]]])
    point = lift_target(kp, scales, (80, 80), sigma=0.0)
    assert point.sum().item() == pytest.approx(2.0)
    blob = lift_target(kp, scales, (80, 80), sigma=1.5)
    assert blob.amax(1)[0, 12, 10].item() == pytest.approx(point.amax(1)[0, 12, 10].item())  # peak kept
    assert blob[0, :, 12, 11].sum().item() == pytest.approx(
        torch.exp(torch.tensor(-1 / 4.5)).item(), rel=1e-5
    )
    # each blob has its single local maximum (over 3x3 and the scales) exactly at its keypoint
    peak_map = blob.amax(1, keepdim=True)  # (1, 1, H, W)
    is_peak = (peak_map == torch.nn.functional.max_pool2d(peak_map, 3, 1, 1)) & (peak_map > 0.1)
    assert sorted(map(tuple, is_peak[0, 0].nonzero().flip(-1).tolist())) == [(10, 12), (50, 60)]
    assert torch.allclose(topk_extract(blob, 1, scales)[0, 0], torch.tensor([50.0, 60.0, 25.0]))


def test_stage_two_moves_keypoints_and_lowers_the_task_loss(hard32):
    images, _ = hard32
    trainer = _trainer(warmup_steps=20)
    trainer.fit(images, steps=20)  # warm the auto-encoder up on random windows first
    model = trainer.model
    task_before = [p.detach().clone() for p in model.task_net.parameters()]
    with torch.no_grad():
        _, keypoints = model.extract(images[:8])
        before = model.task_loss(images[:8], model.run_task(images[:8], keypoints))
    for optimizer in ("scaled", "adam", "search"):
        refined = refine_keypoints(
            model, images[:8], keypoints, None, iterations=6, step=1.0, optimizer=optimizer
        )
        with torch.no_grad():
            after = model.task_loss(images[:8], model.run_task(images[:8], refined))
        assert (refined - keypoints).abs().max() > 1.0  # stage 2 really changes x
        assert after < before  # ... downhill on L_task
    frozen = zip(task_before, model.task_net.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in frozen)  # tau frozen
    assert all(p.requires_grad for p in model.task_net.parameters())  # ... and unfrozen afterwards
    with pytest.raises(ValueError, match="optimizer"):
        refine_keypoints(model, images[:1], keypoints[:1], None, iterations=1, step=1.0, optimizer="lbfgs")


def test_stage_three_regresses_the_heatmap_onto_the_target(hard32):
    """30 stage-3 steps on a fixed h_bar: L_lift falls and E_K starts to find the target's peaks.

    L_lift falls slowly (here by >= 3%): it is dominated by the K target points, where the local softmax
    stays far below 1 until the score map grows sharp peaks; the picks move long before the loss does.
    """
    images, _ = hard32
    torch.manual_seed(0)
    model = MIST(SLIM)
    with torch.no_grad():
        _, keypoints = model.extract(images[:8])
    moved = keypoints.clone()
    moved[..., :2] += 3.0  # pretend stage 2 moved every keypoint by (3, 3) pixels
    target = lift_target(moved, model.scales, (80, 80), sigma=0.0)
    optimiser = torch.optim.Adam(model.heatmap_net.parameters(), lr=3e-3)
    losses = []
    for _ in range(31):
        loss = ((model.heatmap_net(images[:8]) - target) ** 2).mean()  # eq. (14)
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        picks = model.extract(images[:8])[1]
    hits = (torch.cdist(moved[..., :2], picks[..., :2]).min(-1).values < 1).float().mean().item()
    assert losses[-1] < 0.97 * losses[0], losses
    assert hits >= 0.2, hits  # from 0 before: E_K(H(I)) now lands on a fifth of the target peaks


def test_one_step_updates_tau_in_stage_one_and_eta_in_stage_three(hard32):
    images, _ = hard32
    trainer = _trainer()
    heat = [p.detach().clone() for p in trainer.model.heatmap_net.parameters()]
    task = [p.detach().clone() for p in trainer.model.task_net.parameters()]
    losses = trainer.train_step(images[:8], None)
    assert set(losses) == {"task", "lift", "moved_px"}
    assert any(
        not torch.equal(a, b) for a, b in zip(heat, trainer.model.heatmap_net.parameters(), strict=True)
    )
    assert any(not torch.equal(a, b) for a, b in zip(task, trainer.model.task_net.parameters(), strict=True))


def test_warmup_trains_only_the_task_network(hard32):
    images, _ = hard32
    trainer = _trainer(warmup_steps=5)
    heat = [p.detach().clone() for p in trainer.model.heatmap_net.parameters()]
    assert set(trainer.train_step(images[:8], None)) == {"warmup"}
    assert all(torch.equal(a, b) for a, b in zip(heat, trainer.model.heatmap_net.parameters(), strict=True))


@pytest.mark.parametrize("windows", ["random", "heatmap"])
def test_warmup_windows_are_random_or_the_heatmaps_own_picks(hard32, windows):
    """The first warm-up step's loss is the per-patch error at exactly the promised windows."""
    images = hard32[0][:8]
    trainer = _trainer(warmup_steps=5, warmup_windows=windows)
    model = trainer.model
    with torch.no_grad():
        picks = model.extract(images)[1]  # (8, K, 3): E_K(H_eta(I)) of the untrained heatmap network
        generator = step_generator(trainer.config.seed, 0, trainer.device)  # step 0's random windows
        random = random_windows(images, model.config.k, model.scales, generator)
        keypoints, others = (picks, random) if windows == "heatmap" else (random, picks)
        out = model.run_task(images, keypoints)
        expected = ((out.task_output - out.patches) ** 2).mean().item()
        other = model.run_task(images, others)
        other_loss = ((other.task_output - other.patches) ** 2).mean().item()
    assert abs(expected - other_loss) > 1e-3  # the two kinds of window really differ
    assert trainer.train_step(images, None)["warmup"] == pytest.approx(expected, rel=1e-5)


def test_warmup_options_are_checked():
    with pytest.raises(ValueError, match="warmup_windows must be one of"):
        LiftingConfig(warmup_windows="grid")
    with pytest.raises(ValueError, match="warmup_loss must be one of"):
        LiftingConfig(warmup_loss="eq6")


def test_polish_trains_only_the_task_network_on_the_heatmaps_picks(hard32):
    """The last polish_steps run stage 1 alone at E_K(H_eta(I)) with L_task (eq. 6, not per patch);
    with the cosine schedule eta's rate has reached 0 when they start and tau's has not."""
    images = hard32[0][:8]
    trainer = _trainer(steps=10, warmup_steps=2, polish_steps=4, lr_schedule="cosine")
    trainer.fit(images, steps=6)  # two warm-up and four lifting steps
    model = trainer.model
    heat = [p.detach().clone() for p in model.heatmap_net.parameters()]
    with torch.no_grad():
        out = model.run_task(images, model.extract(images)[1])  # at E_K(H_eta(I))
        expected = model.task_loss(images, out).item()
        per_patch = ((out.task_output - out.patches) ** 2).mean().item()
    assert abs(expected - per_patch) > 1e-4  # eq. (6) and the per-patch loss really differ here
    losses = trainer.train_step(images, None)
    assert set(losses) == {"polish"} and losses["polish"] == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(heat, model.heatmap_net.parameters(), strict=True))
    rates = {name: opt.param_groups[0]["lr"] for name, opt in trainer.optimizers.items()}
    lr_task = trainer.config.lr_task * 0.5 * (1 + math.cos(math.pi * 4 / 8))  # 4 of 8 steps after warm-up
    assert rates == pytest.approx({"heatmap": 0.0, "task": lr_task})
    with pytest.raises(ValueError, match="polish_steps must be in"):
        LiftingConfig(steps=10, warmup_steps=5, polish_steps=6)


def test_task_jitter_moves_the_windows_only_where_stage_one_runs_alone(hard32, monkeypatch):
    """With task_jitter = j, the warm-up and the polish train tau on E_K's picks moved by about j s px and
    scaled by about exp(j), drawn again at every step; a lifting step's stage 1 and stage 2 see the picks
    themselves. j = 0 changes nothing. jitter_whole_pixel moves by whole pixels and keeps the side;
    jitter_warmup=False leaves the warm-up's windows alone."""
    images = hard32[0][:8]
    seen: dict[str, list[torch.Tensor]] = {"stage 1": [], "stage 2": []}
    real_update, real_refine = lifting.task_update, LiftingTrainer.refine

    def spy_update(model, optimizer, images, keypoints, *args, **kwargs):
        seen["stage 1"].append(keypoints.clone())
        return real_update(model, optimizer, images, keypoints, *args, **kwargs)

    def spy_refine(self, images, keypoints, *args, **kwargs):
        seen["stage 2"].append(keypoints.clone())
        return real_refine(self, images, keypoints, *args, **kwargs)

    monkeypatch.setattr(lifting, "task_update", spy_update)
    monkeypatch.setattr(LiftingTrainer, "refine", spy_refine)
    phases = dict(steps=4, warmup_steps=1, polish_steps=2, warmup_windows="heatmap")
    for jitter, whole in ((0.0, False), (0.2, False), (0.2, True)):
        # eta fixed: the same picks at every step (0: warm-up, 1: lifting, 2 and 3: polish); whole-pixel
        # moves of the polish alone
        switches = dict(jitter_whole_pixel=True, jitter_warmup=False) if whole else {}
        trainer = _trainer(task_jitter=jitter, lr_heatmap=0.0, **phases, **switches)
        for stage in seen.values():
            stage.clear()
        for step in range(4):
            trainer.step = step
            trainer.train_step(images, None)
        with torch.no_grad():
            picks = trainer.model.extract(images)[1]  # (8, K, 3)
        warmup, lifting_step, *polish = seen["stage 1"]
        assert len(seen["stage 2"]) == 1 and torch.equal(seen["stage 2"][0], picks)
        assert torch.equal(lifting_step, picks)
        if jitter == 0:
            assert all(torch.equal(x, picks) for x in [warmup, *polish])
            continue
        assert not torch.equal(polish[0], polish[1])  # a fresh draw at every step
        if whole:
            assert torch.equal(warmup, picks)
            for windows in polish:
                moves = windows[..., :2] - picks[..., :2]
                assert torch.equal(moves, moves.round()) and torch.equal(windows[..., 2], picks[..., 2])
                assert 0.12 < float((moves / picks[..., 2:]).std()) < 0.28
            continue
        for windows in (warmup, *polish):
            moved = (windows[..., :2] - picks[..., :2]) / picks[..., 2:]  # in window sides
            assert 0.12 < float(moved.std()) < 0.28 and abs(float(moved.mean())) < 0.06
            assert 0.12 < float((windows[..., 2] / picks[..., 2]).log().std()) < 0.28
    with pytest.raises(ValueError, match="task_jitter must be in"):
        LiftingConfig(task_jitter=-0.1)
    for switch in ({"jitter_whole_pixel": True}, {"jitter_warmup": False}):
        with pytest.raises(ValueError, match="set task_jitter > 0"):
            LiftingConfig(**switch)


def _spy_task_batches(monkeypatch) -> list[torch.Tensor]:
    """A list that receives a copy of the images of every stage-1 update from now on."""
    seen: list[torch.Tensor] = []
    real_update = lifting.task_update

    def spy_update(model, optimizer, images, *args, **kwargs):
        seen.append(images.clone())
        return real_update(model, optimizer, images, *args, **kwargs)

    monkeypatch.setattr(lifting, "task_update", spy_update)
    return seen


def test_deform_bends_every_training_batch_afresh_and_zero_changes_nothing(hard32, monkeypatch):
    """With deform = a, each step's stage 1 trains on the batch bent by a field drawn for that step (the
    same at the same step of another run, another at the next step); a = 0 trains on the batch itself."""
    images = hard32[0][:8]
    seen = _spy_task_batches(monkeypatch)
    runs = {}
    for amount in (0.0, 1.5, 1.5):
        seen.clear()
        trainer = _trainer(deform=amount, steps=2)
        for step in range(2):
            trainer.step = step
            trainer.train_step(images, None)
        runs.setdefault(amount, []).append(list(seen))
    assert all(torch.equal(batch, images) for batch in runs[0.0][0])
    first, again = runs[1.5]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], images)
    ink_moved = (first[0] - images).abs().mean() / images.mean()
    assert 0.1 < float(ink_moved) < 1.0  # strokes move by about a pixel, the scene stays the same
    with pytest.raises(ValueError, match="deform must be in"):
        LiftingConfig(deform=-1.0)


def test_dihedral_trains_on_turned_and_flipped_batches_and_refuses_labels(hard32, monkeypatch):
    """With dihedral="all" every step's stage 1 sees each image under one of the square's symmetries, drawn
    for that step (the same at the same step of another run); with "polish" only the polish steps do;
    classification (labels) is refused."""
    images = hard32[0][:8]
    seen = _spy_task_batches(monkeypatch)

    def unchanged(batch: torch.Tensor) -> bool:
        return torch.equal(batch, images)

    runs = []
    for mode in ("all", "all", "polish"):
        seen.clear()
        trainer = _trainer(dihedral=mode, steps=4, polish_steps=2)
        for step in range(4):
            trainer.step = step
            trainer.train_step(images, None)
        runs.append(list(seen))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    for batch in runs[0]:
        for image, out in zip(images, batch, strict=True):  # a permutation of the same pixels
            assert torch.equal(out.flatten().sort().values, image.flatten().sort().values)
        assert sum(not torch.equal(out, image) for image, out in zip(images, batch, strict=True)) >= 4
    assert [unchanged(batch) for batch in runs[2]] == [True, True, False, False]
    assert torch.equal(runs[2][2], runs[0][2])  # the same draw at the same step
    classifier = MIST(dataclasses.replace(SLIM, task="classify"))
    trainer = LiftingTrainer(classifier, "classify", LiftingConfig(steps=2, device="cpu", dihedral="all"))
    with pytest.raises(ValueError, match="dihedral='all' mirrors digits"):
        trainer.train_step(images, torch.zeros(8, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="dihedral must be one of"):
        LiftingConfig(dihedral="yes")


def test_jumps_take_the_runner_up_picks_of_e_k(hard32):
    """With refine_jumps = J, a step picks K + J maxima: the first K are the windows, the rest the
    alternatives stage 2 may jump to; refine_jumps needs the search rule."""
    with pytest.raises(ValueError, match="refine_jumps"):
        LiftingConfig(refine_jumps=3)
    trainer = _trainer(refine_optimizer="search", refine_jumps=3)
    images = hard32[0][:4]
    heatmap, keypoints, alternatives = trainer.pick(images, warming_up=False)
    model = trainer.model
    picks = topk_extract(heatmap.detach(), model.config.k + 3, model.scales, model.config.nms)
    assert keypoints.shape == (4, model.config.k, 3) and alternatives.shape == (4, 3, 3)
    torch.testing.assert_close(torch.cat([keypoints, alternatives], 1), picks)
    assert trainer.pick(images, warming_up=True)[2] is None
    losses = trainer.train_step(images, None)
    assert set(losses) == {"task", "lift", "moved_px"} and all(map(math.isfinite, losses.values()))


def test_residual_jumps_join_the_alternatives(hard32, monkeypatch):
    """jump_residual = M adds M targets on the missing ink to E_K's J runner-ups, in every call of stage 2
    (training steps and inspect alike); it needs the search rule."""
    with pytest.raises(ValueError, match="jump_residual"):
        LiftingConfig(jump_residual=2)
    trainer = _trainer(refine_optimizer="search", refine_jumps=3, jump_residual=2)
    seen = []
    original = lifting.refine_keypoints

    def spy(model, images, keypoints, labels, iterations, step, optimizer, alternatives):
        seen.append(alternatives.shape)
        return original(model, images, keypoints, labels, iterations, step, optimizer, alternatives)

    monkeypatch.setattr(lifting, "refine_keypoints", spy)
    images = hard32[0][:4]
    losses = trainer.train_step(images, None)
    trainer.inspect(images)
    assert seen == [(4, 5, 3), (4, 5, 3)] and all(map(math.isfinite, losses.values()))


def test_target_nms_thins_h_bar_with_the_models_suppression_window(hard32, monkeypatch):
    """target_nms leaves out of h_bar the refined keypoints that sit in the NMS window of a stronger one:
    in training (stage 3's target) and in inspect alike; off, every keypoint keeps its unit of mass."""
    images = hard32[0][:4]
    model_config = dataclasses.replace(SLIM, nms=13)
    torch.manual_seed(0)
    config = LiftingConfig(steps=4, batch_size=4, device="cpu", target_nms=True)
    trainer = LiftingTrainer(MIST(model_config), "reconstruct", config)
    assert trainer.target_nms == 13 and _trainer().target_nms == 1
    original = trainer.refine

    def crowd(images, keypoints, labels, alternatives=None):  # stage 2, then keypoint 1 next to keypoint 0
        refined = original(images, keypoints, labels, alternatives).clone()
        refined[:, 1, :2] = refined[:, 0, :2] + 3.0
        return refined

    monkeypatch.setattr(trainer, "refine", crowd)
    seen = trainer.inspect(images)
    kept = (~suppressed(seen["refined"], 13)).sum(1).float()  # (B,)
    torch.testing.assert_close(seen["target"].flatten(1).sum(1), kept)
    assert float(kept.max()) <= model_config.k - 1  # keypoint 1 left out of every image's target
    losses = trainer.train_step(images, None)
    assert all(map(math.isfinite, losses.values()))


def test_a_short_lifting_run_lowers_the_task_loss(hard32):
    """30 lifting steps on 32 real images: L_task falls by a fifth, and every stage logs its loss."""
    images, _ = hard32
    trainer = _trainer(steps=30, batch_size=8)
    history = trainer.fit(images)
    assert [entry["step"] for entry in history] == [10, 20, 30]
    assert set(history[-1]) == {"step", "task", "lift", "moved_px"}
    assert history[-1]["task"] < 0.8 * history[0]["task"], history
    assert all(entry["moved_px"] > 0 for entry in history)


def test_training_log_records_snapshots_and_round_trips(hard32, tmp_path):
    images, _ = hard32
    trainer = _trainer(snapshot_every=2, steps=4)
    log = TrainingLog({"run": "test"})
    trainer.record_to(log, images[:2])
    trainer.fit(images, steps=4)
    assert log.steps == [0, 2]
    snap = log.snapshot(1)
    assert snap["image"].shape == (2, 1, 80, 80) and snap["heatmap"].shape == (2, 3, 80, 80)
    assert snap["keypoints"].shape == snap["refined"].shape == (2, 9, 3)
    assert "target" not in snap  # derivable from the refined keypoints, so not stored
    assert (snap["image"] - images[:2]).abs().max() <= 0.5 / 255 + 1e-6  # uint8 quantisation only
    log.save(tmp_path / "log.pt")
    again = TrainingLog.load(tmp_path / "log.pt")
    assert again.steps == [0, 2] and again.meta == {"run": "test"}
    assert torch.equal(again.snapshots[1]["refined"], log.snapshots[1]["refined"])


def test_a_killed_lifting_run_resumes_to_the_same_weights(tmp_path):
    """Killed at step 3 (inside the warm-up), resumed to step 6: identical to an uninterrupted run."""
    tiny = dataclasses.replace(
        SLIM, image_size=32, k=3, scales=(8.0, 12.0), reference_size=10.0, heatmap_channels=4, task_width=4
    )
    images = torch.rand(12, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    def trainer() -> LiftingTrainer:
        torch.manual_seed(0)
        config = LiftingConfig(steps=6, batch_size=4, device="cpu", log_every=2, warmup_steps=4)
        return LiftingTrainer(MIST(tiny), "reconstruct", config)

    straight = trainer()
    straight.fit(images)
    killed = trainer()
    killed.fit(images, checkpoint=tmp_path / "run.pt", steps=3)
    resumed = trainer()
    resumed.resume(tmp_path / "run.pt")
    resumed.fit(images)
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert straight.history == resumed.history
    assert [set(e) - {"step"} for e in straight.history] == [
        {"warmup"},
        {"warmup"},
        {"task", "lift", "moved_px"},
    ]


def test_task_mismatch_is_refused():
    with pytest.raises(ValueError, match="task"):
        LiftingTrainer(
            MIST(dataclasses.replace(SLIM, task="classify")), "reconstruct", LiftingConfig(device="cpu")
        )
