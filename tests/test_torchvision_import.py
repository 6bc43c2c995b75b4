"""``import lightning, timm, torchvision`` works as a process's first import on the CPU install
(PyPI's torchvision cannot load its CUDA-built ``_C`` beside the CPU torch wheel; see
mmssm_lightning/_torchvision_compat.py), through the .pth file scripts/install_cpu.sh writes."""

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mmssm_lightning._torchvision_compat import PTH_NAME, needs_shim

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lightning_timm_and_torchvision_import_first(tmp_path):
    # A fresh environment that sees this interpreter's packages (whether or not it is a venv itself)
    # and gets the .pth file the way the installer writes it.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def call(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=300)

    purelib = Path(call("import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    parents = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (purelib / "00_parent_site.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(parents))
    )
    install = call("from mmssm_lightning._torchvision_compat import install_pth; print(install_pth())")
    assert install.returncode == 0, install.stderr[-2000:]
    assert (purelib / PTH_NAME).exists() == needs_shim()

    proc = call("import lightning, timm, torchvision; print(torchvision.__version__)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the startup hook imports nothing heavy: torch waits for the first torchvision import
    assert call("import sys; print('torch' in sys.modules)").stdout.strip() == "False"
