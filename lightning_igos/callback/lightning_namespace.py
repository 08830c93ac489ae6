"""``LightningIGOSCallback``: :class:`~lightning_igos.callback.IGOSCallback` for the ``lightning`` package.

``pytorch_lightning`` and ``lightning.pytorch`` have distinct ``Callback`` base classes. A
``lightning.pytorch.Trainer`` calls any callback's hooks by name, so ``IGOSCallback`` runs
there too; what checks the base class (``lightning.pytorch.cli.LightningCLI`` and its YAML
configs, ``isinstance(cb, lightning.pytorch.Callback)``) needs this class. It is an ordinary
module-level class, so it pickles (``strategy="ddp_spawn"``) and ``class_path:
lightning_igos.callback.LightningIGOSCallback`` finds it. This module imports
``lightning.pytorch``; :mod:`lightning_igos.callback` imports it on first access of the name.
"""

from __future__ import annotations

from lightning.pytorch import Callback

from lightning_igos.callback.hooks import _IGOSCallbackLogic

__all__ = ["LightningIGOSCallback"]


class LightningIGOSCallback(_IGOSCallbackLogic, Callback):
    # The same arguments and behaviour as IGOSCallback; its example, with this class.
    __doc__ = (_IGOSCallbackLogic.__doc__ or "").replace(">>> callback = IGOSCallback(",
                                                         ">>> callback = LightningIGOSCallback(")
