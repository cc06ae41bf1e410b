"""mistlib: Multiple Instance Spatial Transformer networks (Angles et al.), as a small readable library.

The data flows through the modules in this order (one idea per module)::

    data  ->  heatmap  ->  extract  ->  sampler  ->  tasks  ->  losses  ->  objective  ->  model  ->  lifting
    I         h = H(I)     x = E_K(h)   P = S(I, x)  T(P)      L_task      task object     eq. (1)    Alg. 1

(``compact`` holds smaller task networks for the CPU, ``presets`` names the model sizes, ``refine`` is
stage 2 of Algorithm 1, ``experiments`` the methods and recipes of the tables.)

Conventions (used everywhere: code, tests, chapters)
----------------------------------------------------
Pixel coordinates
    x points right, y points down. Pixel ``(i, j)`` (row ``i``, column ``j``) has its centre at
    ``x = j, y = i``; so the image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
Patches
    A patch is square and is described by ``(x, y, s)``: its centre and its side length ``s`` in pixels.
    Its window is ``[x - s/2, x + s/2] x [y - s/2, y + s/2]``. Keypoint tensors are ``(B, K, 3)``.
Scale space
    ``scales`` is a sorted, strictly increasing 1-D tensor of ``S`` positive side lengths in pixels.
Images
    Float tensors ``(B, C, H, W)`` with values in ``[0, 1]``.

Notation
--------
======  ==========================================
symbol  meaning
======  ==========================================
B       batch size
C       image channels
H, W    image height and width (pixels)
S       number of scales in the scale space
K       number of patches extracted per image
P       side of a resampled patch (pixels), e.g. 32
L       number of ground-truth instances per image
======  ==========================================
"""

__version__ = "0.1.0"
