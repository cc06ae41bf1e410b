"""The implementation details of §8: layer tables, config tables, and where the compute goes (FLOPs).

The tables are plain strings in monospace columns, to print in a chapter; :func:`show_compute` draws FLOPs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mistlib.viz.draw import WINDOW_COLOR


def _shape(value) -> str | None:
    if isinstance(value, torch.Tensor):
        return "(" + ", ".join(str(d) for d in value.shape) + ")"
    return None


def _pair(value) -> str:
    value = value if isinstance(value, tuple) else (value, value)
    return "x".join(str(v) for v in value)


def describe_layer(module: nn.Module) -> str:
    """A short name for a layer: kind, kernel and channels of a conv; contents of a ``Sequential``.

    Example:
        >>> describe_layer(nn.Conv2d(8, 16, 3, padding=1))
        'Conv2d 3x3 8->16'
        >>> up = nn.Sequential(nn.GroupNorm(1, 8), nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, stride=2))
        >>> describe_layer(up)
        'GroupNorm -> ReLU -> ConvTranspose2d 2x2 /2 8->4'
        >>> describe_layer(nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()))
        '4 x ReLU'
    """
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        stride = _pair(module.stride)
        step = "" if stride == "1x1" else (" /2" if stride == "2x2" else f" stride {stride}")
        return f"{kind} {_pair(module.kernel_size)}{step} {module.in_channels}->{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    if isinstance(module, nn.MaxPool2d):
        return f"MaxPool2d {_pair(module.kernel_size)}"
    if isinstance(module, nn.Sequential) and len(module):
        kinds = [type(child).__name__ for child in module]
        if len(module) > 1 and len(set(kinds)) == 1:
            return f"{len(module)} x {kinds[0]}"
        if len(module) <= 3:
            return " -> ".join(describe_layer(child) for child in module)
    return kind


def layer_table(module: nn.Module, *inputs: torch.Tensor, max_depth: int = 2) -> str:
    """A table of ``module``'s sub-modules down to ``max_depth``: layer, output shape(s) and parameters.

    The shapes are recorded by forward hooks during one real forward pass on ``inputs`` (no gradients); a
    sub-module called several times (the heatmap trunk once per scale) lists each distinct shape in call
    order. Parameters count the sub-module with everything inside it; ``total`` is the whole module's.
    Names are those of ``named_modules()``, indented by depth; layers are named by :func:`describe_layer`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        >>> print(layer_table(net, torch.rand(2, 1, 5, 5)))
        layer  type             output shape  params
        0      Conv2d 3x3 1->4  (2, 4, 5, 5)      40
        1      ReLU             (2, 4, 5, 5)       0
        2      Flatten          (2, 100)           0
        total  Sequential       (2, 100)          40
    """
    shapes: dict[str, list[str]] = {}
    handles = []
    selected = [(name, sub) for name, sub in module.named_modules() if name and name.count(".") < max_depth]

    def hook(name: str):
        def record(_module, _inputs, output) -> None:
            shape = _shape(output)
            if shape is not None and shape not in shapes.setdefault(name, []):
                shapes[name].append(shape)

        return record

    for name, sub in selected:
        handles.append(sub.register_forward_hook(hook(name)))
    handles.append(module.register_forward_hook(hook("")))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    lines = [["layer", "type", "output shape", "params"]]
    for name, sub in selected:
        indent = "  " * name.count(".")
        params = sum(p.numel() for p in sub.parameters())
        lines.append([indent + name, describe_layer(sub), " / ".join(shapes.get(name, ["—"])), f"{params:,}"])
    total = sum(p.numel() for p in module.parameters())
    lines.append(["total", type(module).__name__, " / ".join(shapes.get("", ["—"])), f"{total:,}"])
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line[:3], widths[:3], strict=True))
        + "  "
        + line[3].rjust(widths[3])
        for line in lines
    ]
    return "\n".join(line.rstrip() for line in text)


def config_table(**configs) -> str:
    """Dataclass configs side by side, one line per field, ``*`` marking the fields whose values differ.

    Args:
        **configs: column name -> a dataclass instance (all of the same class, e.g. two ``LiftingConfig``).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Config:
        ...     steps: int = 6000
        ...     batch_size: int = 32
        ...     device: str = "auto"
        >>> print(config_table(long=Config(), short=Config(steps=400)))
        field       long  short
        steps       6000  400    *
        batch_size  32    32
        device      auto  auto
    """
    import dataclasses

    values = list(configs.values())
    if not values or len({type(v) for v in values}) != 1 or not dataclasses.is_dataclass(values[0]):
        raise ValueError("config_table needs one or more dataclass instances of the same class")
    lines = [["field", *configs]]
    marks = [""]
    for field in dataclasses.fields(values[0]):
        row = [getattr(v, field.name) for v in values]
        lines.append([field.name, *(str(v) for v in row)])
        marks.append("*" if any(v != row[0] for v in row) else "")
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + "  " + mark
        for line, mark in zip(lines, marks, strict=True)
    ]
    return "\n".join(line.rstrip() for line in text)


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Floating-point operations of one forward pass ``module(*inputs)``, as PyTorch's flop counter sees them.

    :class:`torch.utils.flop_counter.FlopCounterMode` counts the matrix products and convolutions (a
    multiply-add is 2 FLOPs); element-wise work (ReLU, norms, softmax, interpolation) is not counted. The
    count depends only on the shapes, so it is the same on every run and every machine.

    Example:
        >>> count_flops(nn.Linear(3, 2), torch.rand(5, 3))  # 2 * 5 * 3 * 2
        60
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def show_compute(flops: Mapping[str, float], title: str = "Where the compute goes") -> Figure:
    """A horizontal bar chart of FLOPs per forward pass, one bar per named part, in GFLOPs.

    Example:
        >>> fig = show_compute({"heatmap network": 3.0e9, "auto-encoder x 9": 1.2e9})
        >>> [round(float(bar.get_width()), 2) for bar in fig.axes[0].patches]
        [3.0, 1.2]
    """
    if not flops:
        raise ValueError("flops must name at least one part")
    names, values = list(flops), [float(v) / 1e9 for v in flops.values()]
    fig = Figure(figsize=(7.5, 0.45 * len(names) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), values, color=WINDOW_COLOR)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # first part on top, in the order given
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlabel("GFLOPs per image (one forward pass)")
    ax.set_xlim(0, max(values) * 1.18)
    ax.set_title(title)
    return fig
