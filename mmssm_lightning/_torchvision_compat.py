"""Make ``import torchvision`` survive on a CPU-only torch.

timm, transformers, torchmetrics (hence ``lightning``) import torchvision at module import. PyPI
only ships CUDA builds of torchvision; on a CPU build of torch its ``_C`` extension cannot load (it
links against ``libtorch_cuda.so``), and torchvision 0.28 then dies registering fake kernels for
``nms`` / ``qnms`` -- the two registrations it does not guard with ``_has_ops()``. Declaring those
two schemas lets the pure-Python parts (transforms, ``FrozenBatchNorm2d``) import; calling the
detection ops then raises torch's own "no kernel" error, which nothing in this project does.
Where ``_C`` loads (any CUDA machine), this module does nothing.

The fix has to run before the first ``import torchvision`` of the process, whoever makes it:

* importing this package installs :func:`install_import_hook` (cheap: torch is not imported until
  torchvision is);
* ``scripts/install_cpu.sh`` calls :func:`install_pth`, which writes ``mmssm_torchvision_compat.pth``
  into site-packages when (and only when) torchvision's ``_C`` does not load, so that the hook is
  in place at interpreter start and ``python -c "import lightning"`` works too. Python runs a
  ``.pth`` file's ``import`` lines at startup; the line does nothing once the package is gone.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "mmssm_torchvision_compat.pth"
PTH_LINE = (
    "import importlib.util; importlib.util.find_spec('mmssm_lightning') is not None and "
    "__import__('mmssm_lightning._torchvision_compat', fromlist=['_']).install_import_hook()\n"
)


def _torchvision_lib() -> Path | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    return next(Path(spec.origin).parent.glob("_C*.so"), None)


def needs_shim() -> bool:
    """Whether torchvision is installed with a ``_C`` extension this torch cannot load."""
    lib_path = _torchvision_lib()
    if lib_path is None:
        return False
    import torch  # noqa: F401  (loads libtorch, which _C links against)

    try:
        ctypes.CDLL(str(lib_path))
    except OSError:
        return True
    return False


def ensure_importable() -> None:
    if "torchvision" in sys.modules or not needs_shim():
        return
    import torch

    try:
        lib = torch.library.Library("torchvision", "DEF")
    except RuntimeError:  # already declared by an earlier call
        return
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the Library object alive: dropping it would unregister the schemas.
    ensure_importable._lib = lib  # type: ignore[attr-defined]


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_importable` when ``torchvision`` is first imported, then steps aside
    (returns None, so the ordinary finders import it)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            uninstall_import_hook()
            ensure_importable()
        return None


def install_import_hook() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeTorchvision())


def uninstall_import_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BeforeTorchvision)]


def install_pth(site_dir: str | Path | None = None) -> str:
    """Write the ``.pth`` file into ``site_dir`` (default: this interpreter's site-packages) if
    torchvision needs the shim here, else remove a stale one. Returns what was done."""
    site = Path(site_dir or sysconfig.get_paths()["purelib"])
    pth = site / PTH_NAME
    if needs_shim():
        pth.write_text(PTH_LINE)
        return f"wrote {pth} (torchvision's _C does not load beside this torch)"
    if pth.exists():
        pth.unlink()
        return f"removed {pth} (torchvision imports without it)"
    return "torchvision imports as is: nothing to do"
