"""The training log of a lifting run: compact snapshots of Algorithm 1's stages on fixed probe images.

Chapter 6 replays it with a step/stage scrubber; :meth:`mistlib.lifting.LiftingTrainer.record_to` fills it.
"""

from __future__ import annotations

from pathlib import Path

import torch


class TrainingLog:
    """Compact snapshots of lifting on fixed probe images, for chapter 6's step/stage scrubber.

    Images, heatmaps and reconstructions are stored as uint8 (values in [0, 1] quantised to 1/255);
    keypoints, logits and losses as float32. ``h_bar`` is not stored: it is ``lift_target(refined)``.

    Example:
        >>> log = TrainingLog({"run": "demo"})
        >>> log.record(0, {"image": torch.rand(1, 1, 8, 8), "keypoints": torch.zeros(1, 2, 3)})
        >>> len(log), log.snapshots[0]["image"].dtype, log.snapshot(0)["image"].dtype
        (1, torch.uint8, torch.float32)
    """

    def __init__(self, meta: dict | None = None) -> None:
        self.meta = dict(meta or {})
        self.steps: list[int] = []
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def record(self, step: int, inspected: dict[str, torch.Tensor]) -> None:
        """Append one snapshot taken at ``step`` (the output of :meth:`LiftingTrainer.inspect`)."""
        snapshot = {}
        for name, value in inspected.items():
            value = value.detach().cpu()
            if name in ("image", "heatmap") or (name == "output" and value.dim() == 4):
                value = (value.clamp(0, 1) * 255).round().to(torch.uint8)
            elif name != "target":
                value = value.float()
            else:
                continue
            snapshot[name] = value
        self.steps.append(step)
        self.snapshots.append(snapshot)

    def save(self, path: str | Path) -> None:
        """Write the log atomically; it loads with ``torch.load(weights_only=True)``."""
        from mistlib.checkpoint import save_checkpoint

        save_checkpoint(
            path,
            state={"steps": self.steps, "snapshots": self.snapshots},
            config={},
            kind="log",
            meta=self.meta,
        )

    @classmethod
    def load(cls, path: str | Path) -> TrainingLog:
        from mistlib.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path, kind="log")
        log = cls(checkpoint.get("meta"))
        log.steps = list(checkpoint["state"]["steps"])
        log.snapshots = list(checkpoint["state"]["snapshots"])
        return log

    def __len__(self) -> int:
        return len(self.steps)

    def snapshot(self, index: int) -> dict[str, torch.Tensor]:
        """Snapshot ``index`` as floats in [0, 1] (images) and float32 tensors (everything else)."""
        return {
            name: value.float() / 255 if value.dtype == torch.uint8 else value
            for name, value in self.snapshots[index].items()
        }
