"""Tests of the §6 figures: the lifting stages, the training-log scrubber, losses, the ablation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mistlib.extract import (
    lift_target,  # noqa: E402
    topk_extract,  # noqa: E402
)
from mistlib.lifting import LiftingConfig, LiftingTrainer  # noqa: E402
from mistlib.model import MIST, MISTConfig  # noqa: E402
from mistlib.traininglog import TrainingLog  # noqa: E402
from mistlib.viz.comparisons import (  # noqa: E402
    compare_methods,
    show_gradient_support,
    show_keypoint_moves,
)
from mistlib.viz.curves import plot_losses  # noqa: E402
from mistlib.viz.training import (  # noqa: E402
    ACTIVE_COLOR,
    evenly_spaced,
    show_lifting_stage,
    training_scrubber_widget,
)
from mistlib.viz.widgets import frames, png_bytes, selected_frame  # noqa: E402

SCALES = (6.0, 8.0, 10.0)
STEPS = [0, 50, 120]


def snapshot(seed: int, images: int = 2, k: int = 3, size: int = 24) -> dict[str, torch.Tensor]:
    """A synthetic ``LiftingTrainer.inspect`` result whose every entry depends on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    keypoints = torch.cat(
        [4 + torch.rand(images, k, 2, generator=g) * (size - 8), torch.full((images, k, 1), 8.0)], -1
    )  # (B, K, 3)
    refined = keypoints + torch.tensor([2.0, -1.0, 0.0])  # every keypoint moves 2 px right, 1 px up
    return {
        "image": torch.rand(images, 1, size, size, generator=g),
        "heatmap": torch.rand(images, len(SCALES), size, size, generator=g),
        "keypoints": keypoints,
        "refined": refined,
        "output": torch.rand(images, 1, size, size, generator=g),
        "task_before": torch.rand(images, generator=g) + 1,
        "task_after": torch.rand(images, generator=g),
        "lift": torch.rand(images, generator=g) / 100,
    }


@pytest.fixture
def log() -> TrainingLog:
    log = TrainingLog({"experiment": "test"})
    for index, step in enumerate(STEPS):
        log.record(step, snapshot(seed=index))
    return log


def pixels(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def picture(widget) -> bytes:
    """The PNG that the scrubber's picture (a Stack of frames) shows."""
    return bytes(selected_frame(widget.picture).value)


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def arrows(ax) -> int:
    return sum(1 for text in ax.texts if getattr(text, "arrow_patch", None) is not None)


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array().data)


# -- the scrubber ------------------------------------------------------------------------------------------


def test_scrubber_controls_are_step_slider_first_then_stage_and_image(log):
    import ipywidgets as widgets

    widget = training_scrubber_widget(log, scales=SCALES)
    step, stage, image, stack, out = widget.children
    assert isinstance(step, widgets.SelectionSlider) and step.description == "step"
    assert step.options == (("0", 0), ("50", 1), ("120", 2))  # labelled with the real training steps
    assert step.value == 1  # starts in the middle
    assert stage.description == "stage" and [value for _, value in stage.options] == [1, 2, 3]
    assert [label for label, _ in stage.options] == [
        "1: task update",
        "2: keypoint refinement",
        "3: heatmap regression",
    ]
    assert image.description == "image" and list(image.options) == [0, 1]
    assert stack is widget.picture and isinstance(out, widgets.Output)
    assert picture(widget)[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_snapshot_stage_and_image_is_a_saved_frame_linked_to_its_control(log):
    import ipywidgets as widgets
    from ipywidgets import widget_link

    widget = training_scrubber_widget(log, scales=SCALES, dpi=40)
    step, stage, image, stack, _ = widget.children
    saved = [bytes(frame.value) for frame in frames(stack)]
    assert len(saved) == len(set(saved)) == 3 * 3 * 2  # steps x stages x images, all different
    # step -> stage -> image, nested; each Stack follows its control's index in the browser (a jslink)
    depth = {stack.model_id: 0}
    depth |= {middle.model_id: 1 for middle in stack.children}
    depth |= {inner.model_id: 2 for middle in stack.children for inner in middle.children}
    assert len(stack.links) == len(depth) == 1 + 3 + 9
    linked = set()
    for link in stack.links:
        assert isinstance(link, widget_link.Link) and not isinstance(link, widget_link.DirectionalLink)
        (target, trait), control = link.target, (step, stage, image)[depth[link.target[0].model_id]]
        assert isinstance(target, widgets.Stack) and trait == "selected_index"
        assert link.source == (control, "index")
        linked.add(target.model_id)
    assert linked == set(depth)  # every Stack, once
    # a frame saved for (step 50, stage 3, image 1) is what the live redraw shows there
    step.value, stage.value, image.value = 1, 3, 1
    assert [s.selected_index for s in (stack, stack.children[1], stack.children[1].children[2])] == [1, 2, 1]
    assert picture(widget) == saved[(1 * 3 + 2) * 2 + 1]
    assert picture(widget) == png_bytes(widget.result, 40, colors=128)


def test_the_step_slider_offers_evenly_spaced_snapshots():
    assert evenly_spaced(60, 16)[:3] == [0, 4, 8] and evenly_spaced(60, 16)[-1] == 59
    assert len(evenly_spaced(60, 16)) == 16 and evenly_spaced(2, 16) == [0, 1]
    assert evenly_spaced(60, 4, keep=3) == [0, 3, 20, 39, 59] and evenly_spaced(60, 1) == [0]
    log = TrainingLog({"experiment": "test"})
    for step in range(0, 100, 10):
        log.record(step, snapshot(seed=step, images=1))
    widget = training_scrubber_widget(log, scales=SCALES, dpi=20, snapshots=4, start=2)
    assert widget.children[0].options == (("0", 0), ("20", 2), ("30", 3), ("60", 6), ("90", 9))
    assert widget.children[0].value == 2 and len(list(frames(widget.picture))) == 5 * 3


def test_moving_the_step_slider_shows_that_snapshot_with_its_real_step(log):
    widget = training_scrubber_widget(log, scales=SCALES)
    slider = widget.children[0]
    seen = []
    for index, step in enumerate(STEPS):
        slider.value = index
        fig = widget.result
        assert fig.get_suptitle().startswith(f"step {step} · stage 1")
        expected = log.snapshot(index)["heatmap"][0].amax(0)  # the heatmap panel is that snapshot's
        np.testing.assert_allclose(shown(fig.axes[1]), expected.numpy(), atol=1e-6)
        seen.append(picture(widget))
    assert len(set(seen)) == len(STEPS)  # the displayed PNG changed at every step


def test_stage_control_changes_overlays_and_active_panels(log):
    widget = training_scrubber_widget(log, scales=SCALES, start=0)
    stage = widget.children[1]
    k = log.snapshots[0]["keypoints"].shape[1]
    results = {}
    for value in (1, 2, 3):
        stage.value = value
        results[value] = (widget.result, picture(widget))
    one, two, three = (results[v][0] for v in (1, 2, 3))
    assert len({png for _, png in results.values()}) == 3
    # stage 1: the windows x only; stage 2: x (dashed) and x*, with an arrow per moved keypoint
    assert len(rectangles(one.axes[0])) == k and arrows(one.axes[0]) == 0
    assert len(rectangles(two.axes[0])) == 2 * k and arrows(two.axes[0]) == k
    dashed = [r for r in rectangles(two.axes[0]) if r.get_linestyle() == "--"]
    assert len(dashed) == k
    # the heatmap shows x in stage 1 and x* in stage 3
    refined = log.snapshot(0)["refined"][0]
    points_one = one.axes[1].lines[0].get_xydata()
    points_three = three.axes[1].lines[0].get_xydata()
    np.testing.assert_allclose(points_three, refined[:, :2].numpy())
    assert not np.allclose(points_one, points_three)
    # frames: stage 1 works on image + heatmap, stage 2 on image + output, stage 3 on heatmap + target
    for fig, active in ((one, {0, 1}), (two, {0, 2}), (three, {1, 3})):
        framed = {
            i for i, ax in enumerate(fig.axes) if ax.spines["top"].get_edgecolor() == _rgba(ACTIVE_COLOR)
        }
        assert framed == active
    # each stage names its loss, with the snapshot's values
    values = log.snapshot(0)
    assert f"L_task(x) = {float(values['task_before'][0]):.3g}" in one.get_suptitle()
    assert f"→ {float(values['task_after'][0]):.3g}" in two.get_suptitle()
    assert f"L_lift = {float(values['lift'][0]):.3g}" in three.get_suptitle()


def _rgba(color: str) -> tuple[float, float, float, float]:
    return matplotlib.colors.to_rgba(color)


def test_warmup_snapshots_are_marked(log):
    widget = training_scrubber_widget(log, scales=SCALES, warmup_steps=50, start=0)
    assert widget.result.get_suptitle() == "step 0 · warm-up, not applied yet · stage 1: task update · " + (
        f"L_task(x) = {float(log.snapshot(0)['task_before'][0]):.3g}"
    )
    widget.children[0].value = 1  # step 50: lifting has started
    assert "warm-up" not in widget.result.get_suptitle()


def test_image_control_switches_probe_image(log):
    widget = training_scrubber_widget(log, scales=SCALES)
    widget.children[0].value = 2
    first = shown(widget.result.axes[0])
    widget.children[2].value = 1
    second = shown(widget.result.axes[0])
    np.testing.assert_allclose(second, log.snapshot(2)["image"][1, 0].numpy())
    assert not np.allclose(first, second)


def test_target_panel_is_the_lift_target_of_the_refined_keypoints(log):
    fig = show_lifting_stage(log.snapshot(1), stage=3, image=1, scales=SCALES)
    refined = log.snapshot(1)["refined"][1]
    target = lift_target(refined[None], torch.tensor(SCALES), (24, 24), sigma=0.0)[0].sum(0)
    dilated = F.max_pool2d(target[None, None], 3, stride=1, padding=1)[0, 0]
    np.testing.assert_allclose(shown(fig.axes[3]), dilated.numpy(), atol=1e-6)
    rounded = torch.floor(refined[:, :2] + 0.5).long()
    assert all(target[y, x] > 0 for x, y in rounded.tolist())
    # Gaussian targets are shown as they are (no dilation)
    blurred = show_lifting_stage(log.snapshot(1), stage=3, image=1, scales=SCALES, sigma=1.5)
    expected = lift_target(refined[None], torch.tensor(SCALES), (24, 24), sigma=1.5)[0].sum(0)
    np.testing.assert_allclose(shown(blurred.axes[3]), expected.numpy(), atol=1e-6)


def test_a_log_snapshot_and_the_inspect_result_it_came_from_draw_the_same_target():
    """Oracle: the log drops ``target``; recomputing it must give what ``inspect`` returned."""
    torch.manual_seed(0)
    config = MISTConfig(image_size=32, k=2, scales=(8.0, 12.0), reference_size=8.0, heatmap_channels=4)
    model = MIST(config)
    trainer = LiftingTrainer(model, "reconstruct", LiftingConfig(device="cpu", refine_iterations=2))
    inspected = trainer.inspect(torch.rand(2, 1, 32, 32))
    log = TrainingLog()
    log.record(7, inspected)
    assert "target" not in log.snapshot(0)
    from_inspect = show_lifting_stage(inspected, stage=3, scales=config.scales)
    from_log = show_lifting_stage(log.snapshot(0), stage=3, scales=config.scales)
    np.testing.assert_allclose(shown(from_log.axes[3]), shown(from_inspect.axes[3]))


def test_classification_output_is_the_mean_class_histogram():
    values = snapshot(3)
    values["output"] = torch.randn(2, 3, 10)  # logits (B, K, classes)
    fig = show_lifting_stage(values, stage=2, image=1, scales=SCALES)
    heights = [bar.get_height() for bar in fig.axes[2].patches]
    np.testing.assert_allclose(heights, values["output"][1].softmax(-1).mean(0).numpy(), rtol=1e-5)
    assert sum(heights) == pytest.approx(1.0)


def test_a_failing_redraw_is_reported_and_leaves_the_saved_frames(log, caplog):
    widget = training_scrubber_widget(log, scales=SCALES)
    before, saved = widget.result, [bytes(frame.value) for frame in frames(widget.picture)]
    log.snapshots[0].pop("refined")  # a broken snapshot
    widget.children[0].value = 0
    # ipywidgets' interactive logs the error here; in a kernel it shows the traceback in its output area
    assert "snapshot has no 'refined'" in caplog.text
    assert widget.result is before and [bytes(frame.value) for frame in frames(widget.picture)] == saved


def test_bad_stage_or_incomplete_snapshot_raise():
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        show_lifting_stage(snapshot(0), stage=4)
    incomplete = {key: value for key, value in snapshot(0).items() if key != "refined"}
    with pytest.raises(ValueError, match="'refined'"):
        show_lifting_stage(incomplete, stage=1)
    with pytest.raises(ValueError, match="no snapshot"):
        training_scrubber_widget(TrainingLog())


# -- the other figures ---------------------------------------------------------------------------------------


def test_plot_losses_draws_the_logged_values_and_shades_the_warmup():
    history = [{"step": s, "warmup": 0.3 - s / 1000} for s in (50, 100)]
    history += [
        {"step": s, "task": 0.1 - s / 10_000, "lift": 3e-4 + s / 1e7, "moved_px": 1.0} for s in (150, 200)
    ]
    fig = plot_losses(history, warmup_steps=100)
    task_ax, lift_ax = fig.axes
    warm, task = task_ax.lines
    np.testing.assert_allclose(warm.get_xydata(), [[50, 0.25], [100, 0.2]])
    np.testing.assert_allclose(task.get_xydata(), [[150, 0.085], [200, 0.08]])
    np.testing.assert_allclose(lift_ax.lines[0].get_ydata(), [3.15e-4, 3.2e-4])
    for ax in fig.axes:
        spans = [p for p in ax.patches if p.get_label() == "warm-up"]
        assert len(spans) == 1
        assert (spans[0].get_x(), spans[0].get_x() + spans[0].get_width()) == (0, 100)
    # a run that has not left the warm-up yet: the lift panel says so
    early = plot_losses(history[:2], warmup_steps=400)
    assert [t.get_text() for t in early.axes[1].texts] == ["no lifting steps logged"]
    span = early.axes[0].patches[0]
    assert span.get_x() + span.get_width() == 100  # the shading stops at the last logged step
    assert not plot_losses(history).axes[0].patches  # no warm-up: nothing shaded


def test_compare_methods_rows_per_method_and_ground_truth_boxes():
    images = torch.rand(2, 1, 16, 16)
    picks = torch.tensor([[[4.0, 4.0, 6.0]], [[9.0, 9.0, 6.0]]])  # (B, K=1, 3)
    boxes = torch.tensor([[[1.0, 1, 6, 6], [0, 0, 0, 0]], [[2, 2, 9, 9], [8, 8, 14, 14]]])  # padded (B, L, 4)
    results = {"naive": (picks, images * 0.5), "lifting": (picks + 1, images)}
    fig = compare_methods(images, results, boxes=boxes)
    assert len(fig.axes) == 8
    # ground truth (the padding row skipped) + the K = 1 pick
    assert [len(rectangles(ax)) for ax in fig.axes[:2]] == [1 + 1, 2 + 1]
    np.testing.assert_allclose(shown(fig.axes[2]), (images[0, 0] * 0.5).numpy())  # naive reconstruction
    np.testing.assert_allclose(shown(fig.axes[7]), images[1, 0].numpy())  # lifting reconstruction
    assert fig.axes[4].get_ylabel() == "lifting\ndetections"


def test_keypoint_moves_draw_an_arrow_per_moved_keypoint():
    images = torch.rand(2, 1, 20, 20)
    before = torch.tensor([[[5.0, 5.0, 6.0], [12.0, 12.0, 6.0]], [[8.0, 8.0, 6.0], [15.0, 5.0, 6.0]]])
    after = before.clone()
    after[0, 1, :2] += 3.0  # one keypoint of image 0 moves
    fig = show_keypoint_moves(images, before, after)
    assert [arrows(ax) for ax in fig.axes] == [1, 0]
    assert [len(rectangles(ax)) for ax in fig.axes] == [4, 4]
    assert [arrows(ax) for ax in show_keypoint_moves(images, before, after, arrows=False).axes] == [0, 0]
    with pytest.raises(ValueError, match="must both be"):
        show_keypoint_moves(images, before, after[:1])


def test_topk_gradient_support_is_at_most_k_pixels():
    torch.manual_seed(0)
    heatmap = torch.rand(1, 2, 12, 12, requires_grad=True)
    keypoints = topk_extract(heatmap, 3, torch.tensor([4.0, 6.0]))
    (keypoints**2).sum().backward()
    lift_grad = 2 * (heatmap.detach() - torch.zeros_like(heatmap))  # dL_lift/dh toward an all-zero target
    fig = show_gradient_support(
        torch.rand(1, 12, 12), keypoints[0].detach(), {"top-K": heatmap.grad[0], "lift": lift_grad[0]}
    )
    support = int((heatmap.grad[0].abs().sum(0) > 0).sum())
    assert 0 < support <= 3
    assert fig.axes[1].get_title() == f"top-K: {support} of 144 pixels"
    assert fig.axes[2].get_title() == "lift: 144 of 144 pixels"


def test_figures_render_to_different_pixels_for_different_snapshots(log):
    a = pixels(show_lifting_stage(log.snapshot(0), stage=2, scales=SCALES, step=0))
    b = pixels(show_lifting_stage(log.snapshot(1), stage=2, scales=SCALES, step=50))
    assert a.shape == b.shape and not np.array_equal(a, b)
