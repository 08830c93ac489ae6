"""The functional core: plain functions on tensors that need torch alone.

* :mod:`~lightning_igos.core.solver`: the I-GOS and iGOS++ saliency solver (:func:`igos`);
* :mod:`~lightning_igos.core.causal`: the causal insertion and deletion curves and AUCs;
* :mod:`~lightning_igos.core.gradients`: gradient and integrated-gradients saliencies to compare with;
* :mod:`~lightning_igos.core.baselines`: the baseline (solver) and substrate (metrics) images;
* :mod:`~lightning_igos.core.scoring`: the score that is explained (softmax probability or ``score_fn``);
* :mod:`~lightning_igos.core.validation`: the argument checks every entry point starts with;
* :mod:`~lightning_igos.core.runtime`: context managers and batching that keep the work side-effect free.
"""
