"""Pure plotting functions that return matplotlib figures (for the chapters, their widgets and the tests).

Every function builds a new :class:`matplotlib.figure.Figure` with the object-oriented API: nothing is shown,
no pyplot state or rc setting is touched, so a test can call the same function a widget does.
Images are drawn in pixel coordinates (pixel ``(i, j)`` has centre ``x = j, y = i``; x right, y down).

Every panel is drawn by :mod:`mistlib.viz.draw` (images, patches, heatmaps, windows, boxes, keypoints), and
every widget shows its figure through :mod:`mistlib.viz.widgets`. Then one module per topic, in the order of
the chapters:

* :mod:`mistlib.viz.scenes` — the datasets (samples with their boxes and labels);
* :mod:`mistlib.viz.pipeline` — eq. (1) end to end: image, heatmap, patches, task output (chapters 1 and 3);
* :mod:`mistlib.viz.localisers` — §2: how each family of methods localises instances (chapter 2);
* :mod:`mistlib.viz.heatmaps` — §4: heatmaps per scale and the local softmax (chapter 4);
* :mod:`mistlib.viz.extraction` — §4: top-K, the order of eq. (2)–(3), the sampler (chapter 4);
* :mod:`mistlib.viz.tasks` — §5: the auto-encoder, S⁻¹ and the multi-instance loss (chapter 5);
* :mod:`mistlib.viz.training` — §6: the lifting stages and the training-log scrubber (chapter 6);
* :mod:`mistlib.viz.comparisons` — §6: keypoints before and after, gradient support, methods compared;
* :mod:`mistlib.viz.curves` — the loss curves of a run (chapter 6) and validation curves (chapter 9);
* :mod:`mistlib.viz.results` — §7: Figures 3–6 of the results (chapter 7), with
  :mod:`mistlib.viz.matching` (detections against ground truth) and :mod:`mistlib.viz.result_tables`
  (Tables 1–2);
* :mod:`mistlib.viz.compute` — §8: layer tables, config tables and FLOPs (chapter 8).

A module a chapter imports from keeps the names it imported when they moved to a more specific module.
Widgets are thin :mod:`ipywidgets` controls over these functions, built by the ``*_widget`` functions of
the same modules; each returns the widget, whose callback a test can drive without a browser.
"""

from mistlib.viz.draw import BOX_COLOR
from mistlib.viz.scenes import show_samples

__all__ = ["BOX_COLOR", "show_samples"]
