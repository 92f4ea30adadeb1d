"""Python packages DFM50N needs inside Slicer: checked on first use, installed only with consent.

Nothing here runs at import or at Slicer startup. `missing()` looks packages up without importing
them (importing torch takes seconds). torch comes from Slicer's PyTorch extension (PyTorchUtils picks
the CPU/CUDA build that fits the machine); a plain `pip install torch` could pull a multi-GB build.
The pip packages are listed in Resources/requirements*.txt (the template's place; a test keeps those
files and the lists below equal) and installed with `slicer.packaging.pip_ensure` on Slicer >= 5.12,
`slicer.util.pip_install` on 5.8/5.10. Only what in-Slicer use needs is asked for: scoring needs scipy
and platformdirs (numpy, SimpleITK and requests ship with Slicer), the upstream-parity geometry adds
nibabel, the full report adds matplotlib.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from DFM50NLib.errors import DFM50NError


class DependencyError(DFM50NError):
    """A required package is missing and was not installed (declined, or the installer failed)."""


@dataclass(frozen=True)
class Requirement:
    module: str  # import name
    spec: str  # pip requirement


# torch is deliberately absent from pip specs: see `ensure`.
TORCH = Requirement("torch", "torch>=2.2")
PIP_REQUIREMENTS = (  # Resources/requirements.txt: scoring
    Requirement("scipy", "scipy>=1.10"),
    Requirement("platformdirs", "platformdirs>=3"),
)
REFERENCE_REQUIREMENTS = (Requirement("nibabel", "nibabel>=5"),)  # Resources/requirements-reference.txt
REPORT_REQUIREMENTS = (Requirement("matplotlib", "matplotlib>=3.7"),)  # Resources/requirements-report.txt
RESOURCES = Path(__file__).resolve().parents[2] / "Resources"
REQUIREMENT_FILES = {
    "requirements.txt": PIP_REQUIREMENTS,
    "requirements-reference.txt": REFERENCE_REQUIREMENTS,
    "requirements-report.txt": REPORT_REQUIREMENTS,
}


def for_scoring(geometry="physical") -> tuple:
    """What Score needs for these options (torch first)."""
    return (TORCH,) + PIP_REQUIREMENTS + (REFERENCE_REQUIREMENTS if geometry == "reference" else ())


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(requirements=(TORCH,) + PIP_REQUIREMENTS) -> list:
    """Requirements whose module cannot be found (no import happens)."""
    return [r for r in requirements if not is_installed(r.module)]


def describe(reqs) -> str:
    return ", ".join(r.spec for r in reqs)


def ensure(confirm=None, requirements=(TORCH,) + PIP_REQUIREMENTS, *, slicer_module=None) -> list:
    """Install what is missing after `confirm(message) -> bool` agrees; returns what was installed.

    confirm=None means "do not ask, do not install": a missing package is a DependencyError that
    says how to install it. torch is installed through the PyTorch extension (PyTorchUtils).
    """
    todo = missing(requirements)
    if not todo:
        return []
    message = (
        f"DFM50N needs these Python packages, not installed yet: {describe(todo)}.\n"
        "Install them now? (This downloads packages from the internet and may take several minutes.)"
    )
    if confirm is None or not confirm(message):
        raise DependencyError(
            f"Missing Python packages: {describe(todo)}. Press Score again and accept the "
            "installation, or install them from Slicer's Python console: "
            f"slicer.util.pip_install('{' '.join(r.spec for r in todo if r is not TORCH)}')"
            + (" and torch via the PyTorch extension (Extensions Manager)." if TORCH in todo else ".")
        )
    slicer = slicer_module
    if slicer is None:
        import slicer
    if TORCH in todo:
        _install_torch()
    pip_todo = [r for r in todo if r is not TORCH]
    if pip_todo:
        _pip_install(slicer, [r.spec for r in pip_todo])
    still = missing(todo)
    if still:
        raise DependencyError(
            f"Installation finished but these packages are still missing: {describe(still)}. "
            "Restart Slicer and try again; see the Python console for pip's messages."
        )
    return todo


def _install_torch():
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise DependencyError(
            "PyTorch is not installed. Install the 'PyTorch' extension from the Extensions "
            "Manager, restart Slicer, then press Score again."
        ) from exc
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if not logic.torchInstalled():
        torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.2")
        if torch is None:
            raise DependencyError(
                "PyTorch could not be installed by the PyTorch extension; see its module "
                "page (PyTorch Utils) for details."
            )


def packaging_module(slicer):
    """`slicer.packaging` (Slicer >= 5.12) or None. It is a submodule: not an attribute of `slicer`
    until something imports it, so import it explicitly."""
    mod = getattr(slicer, "packaging", None)
    if mod is None and sys.modules.get("slicer") is slicer:
        try:
            import slicer.packaging as mod
        except ImportError:
            return None
    return mod if mod is not None and hasattr(mod, "pip_ensure") else None


def _pip_install(slicer, specs):
    """slicer.packaging.pip_ensure where Slicer has it (5.12+), else slicer.util.pip_install (5.8/5.10).
    Both run pip in a process and raise CalledProcessError when it fails (no network, proxy, no wheel for
    this platform): said in words, with what to try, instead of a traceback."""
    mod = packaging_module(slicer)
    try:
        if mod is not None:
            from packaging.requirements import Requirement as PipRequirement

            # the user already agreed in `ensure`: no second dialog
            mod.pip_ensure([PipRequirement(s) for s in specs], prompt_install=False, requester="DFM50N")
        else:  # 5.8/5.10 split a string on spaces (no shell): unquoted specs without spaces are safe.
            slicer.util.pip_install(" ".join(specs))
    except subprocess.CalledProcessError as exc:
        raise DependencyError(
            f"Installing {', '.join(specs)} failed: pip exited with code {exc.returncode}. Check the internet "
            "connection (and proxy settings), read pip's messages in the Python console, then press Score again "
            f"or run in Slicer's Python console: slicer.util.pip_install('{' '.join(specs)}')"
        ) from exc
    except RuntimeError as exc:
        raise DependencyError(f"Installing {', '.join(specs)} failed: {exc}") from exc
