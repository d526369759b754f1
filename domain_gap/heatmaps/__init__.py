"""Where the model looks: class-conditional Grad-CAM per domain, compared class by class.

``stats`` (per-image attention statistics, numpy), ``compare`` (permutation tests, BH, mean-map
distance), ``run`` (the cached pass over the evaluation subsets); the CAM itself is
``models.cam``.
"""
