"""Pure plotting functions that return matplotlib figures (for the chapters, their widgets and the tests).

Every function builds a new :class:`matplotlib.figure.Figure` with the object-oriented API: nothing is shown,
no pyplot state or rc setting is touched, so a test can call the same function a widget does.
Images are drawn in pixel coordinates (pixel ``(i, j)`` has centre ``x = j, y = i``; x right, y down).

One module per topic, in the order of the chapters:

* :mod:`mistlib.viz.scenes` — the datasets (samples with their boxes and labels);
* :mod:`mistlib.viz.pipeline` — eq. (1) end to end: image, heatmap, patches, task output (chapters 1–3);
* :mod:`mistlib.viz.extraction` — §4: heatmaps per scale, the local softmax, top-K, the sampler (chapter 4);
* :mod:`mistlib.viz.tasks` — §5: the auto-encoder, S⁻¹ and the multi-instance loss (chapter 5);
* :mod:`mistlib.viz.training` — §6: the lifting stages and the training log (chapter 6);
* :mod:`mistlib.viz.results` — §7: the figures and tables of the results (chapters 7–8).

Widgets are thin :mod:`ipywidgets` controls over these functions, built by the ``*_widget`` functions of
the same modules; each returns the widget, whose callback a test can drive without a browser.
"""

from mistlib.viz.scenes import BOX_COLOR, show_samples

__all__ = ["BOX_COLOR", "show_samples"]
