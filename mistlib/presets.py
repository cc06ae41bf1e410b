"""Named model presets: the paper's networks (§4, §8) and a compact version sized for a 2-core CPU.

A preset is data: the :class:`~mistlib.model.MISTConfig` fields it sets. Everything else (task, K, scales,
composite, NMS) is the recipe's or the caller's: ``preset("compact", task="classify", nms=5)``.
"""

from __future__ import annotations

from dataclasses import replace

from mistlib.model import MISTConfig

PRESETS: dict[str, dict[str, object]] = {
    # §4: 4 ResNet blocks of 32 channels at full resolution for the middle scale; §8: the auto-encoder and
    # classifier with 3 ResNet blocks per level. MISTConfig's defaults.
    "paper": {"heatmap_channels": 32, "heatmap_blocks": 4, "reference_size": 20.0, "task_network": "paper"},
    # The same scale space with a slim trunk (16 channels, 2 blocks) run at 0.4 x the paper's resolution
    # (the images resized by 8 / s instead of 20 / s, then the scores upsampled back), and the strided
    # task networks of mistlib.compact with a 64-number code.
    "compact": {
        "heatmap_channels": 16,
        "heatmap_blocks": 2,
        "reference_size": 8.0,
        "task_network": "compact",
        "task_width": 16,
        "task_code": 64,
    },
}


def preset(name: str, **overrides: object) -> MISTConfig:
    """The :class:`~mistlib.model.MISTConfig` of preset ``name``, with ``overrides`` on top.

    Example:
        >>> config = preset("compact", task="classify", nms=5)
        >>> config.task_network, config.reference_size, config.task, config.nms
        ('compact', 8.0, 'classify', 5)
        >>> preset("huge")
        Traceback (most recent call last):
        ...
        ValueError: preset must be one of ['paper', 'compact'], got 'huge'
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {name!r}")
    return replace(MISTConfig(), **(PRESETS[name] | overrides))
