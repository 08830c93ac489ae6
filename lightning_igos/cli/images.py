"""The PNG panels of ``lightning-igos check --images``: one per probe image and the overlay grid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_igos.cli.errors import InputError
from lightning_igos.cli.outputs import note_panels, write_with
from lightning_igos.core.evaluation import Evaluation
from lightning_igos.probe import Probe

if TYPE_CHECKING:
    from lightning_igos.class_names import ClassNames


def check_panels(probe: Probe, evaluation: Evaluation, mean: Any, std: Any,
                 class_names: ClassNames | None = None) -> tuple[list[Tensor], Tensor]:
    """The panel of each probe image (image, heatmap, its top pixels kept over the insertion substrate, and
    curves) and the overlay grid of all.

    With ``class_names`` the panel headers read ``class 3 (cat)`` and the grid's tiles are captioned.
    """
    from lightning_igos.render import explanation_panels, grid_labels, insertion_substrate, overlay_grid, unnormalize

    evaluation = evaluation.cpu()
    shown = unnormalize(probe.images, mean, std)
    substrate = unnormalize(insertion_substrate(probe.images, evaluation.config), mean, std, range_of=probe.images)
    panels = explanation_panels(shown, evaluation.saliency, evaluation.curves, evaluation.targets,
                                evaluation.predictions, indices=range(len(probe)), class_names=class_names,
                                substrate=substrate)
    labels = None if class_names is None else grid_labels(range(len(probe)), evaluation.targets, class_names)
    return panels, overlay_grid(shown, evaluation.saliency, labels=labels)


def write_images(folder: Path, probe: Probe, evaluation: Evaluation, mean: Any, std: Any,
                 rendered: tuple[list[Tensor], Tensor] | None = None) -> list[Path]:
    """``probe_<i>.png`` (image, heatmap, the top pixels kept, curves) per image and ``overlays.png`` for all, each
    written atomically.

    ``rendered``: the output of :func:`check_panels` when already drawn (else drawn here). Within
    :func:`~lightning_igos.cli.outputs.one_run` (the check) the folder also gets ``manifest.json`` (the run
    id and these files) and loses the ``probe_<i>.png`` panels of an earlier, larger probe.
    """
    from lightning_igos.render import save_png
    from lightning_igos.render.files import OVERLAYS_FILE, panel_file

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the image folder '{folder}': {err}") from err
    panels, grid = rendered if rendered is not None else check_panels(probe, evaluation, mean, std)
    written = []
    for name, image in [*((panel_file(i), panel) for i, panel in enumerate(panels)), (OVERLAYS_FILE, grid)]:
        written.append(folder / name)
        try:
            write_with(written[-1], lambda temporary, image=image: save_png(image, temporary))
        except OSError as err:
            raise InputError(f"cannot write '{written[-1]}': {err}") from err
    note_panels(folder, [path.name for path in written])  # within one_run: the manifest, stale panels removed
    return written
