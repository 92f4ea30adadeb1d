"""Python packages the scoring needs inside Slicer: checked on first use, installed only with consent.

Nothing here runs at import or at Slicer startup. `missing()` looks packages up without importing
them (importing torch takes seconds). torch comes from Slicer's PyTorch extension (PyTorchUtils picks
the CPU/CUDA build that fits the machine); a plain `pip install torch` could pull a multi-GB build.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from DFM50NLib.errors import DFM50NError


class DependencyError(DFM50NError):
    """A required package is missing and was not installed (declined, or the installer failed)."""


@dataclass(frozen=True)
class Requirement:
    module: str  # import name
    spec: str  # pip requirement


# torch is deliberately absent from pip specs: see `ensure`.
TORCH = Requirement("torch", "torch>=2.2")
PIP_REQUIREMENTS = (
    Requirement("scipy", "scipy>=1.10"),
    Requirement("SimpleITK", "SimpleITK>=2.2"),
    Requirement("nibabel", "nibabel>=5"),
    Requirement("platformdirs", "platformdirs>=3"),
    Requirement("requests", "requests>=2.28"),  # bundled with Slicer; listed for plain Pythons
)


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


def _pip_install(slicer, specs):
    """slicer.pydeps.pip_ensure / slicer.packaging.pip_ensure where Slicer has it, else pip_install."""
    for name in ("pydeps", "packaging"):
        mod = getattr(slicer, name, None)
        if mod is not None and hasattr(mod, "pip_ensure"):
            from packaging.requirements import Requirement as PipRequirement

            mod.pip_ensure([PipRequirement(s) for s in specs], requester="DFM50N")
            return
    # Older Slicer splits a string on spaces (no shell): unquoted specs without spaces are safe.
    slicer.util.pip_install(" ".join(specs))
