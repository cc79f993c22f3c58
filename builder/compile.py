"""Stage 4: compile the kernel top and the hls4ml firmware with g++ into the emulation library.

This is what XRT software emulation does with the kernel source: the same C++ as the FPGA kernel,
built for the CPU. The result exports `fpgaas_kernel` and the multi-threaded `fpgaas_kernel_batch` (see
`fpgaas.kernels.twin.KernelLibrary`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fpgaas.builder.tools import require, run_logged

COMPILER: Final = "g++"
# hls4ml's build_lib.sh uses -O3 -fPIC (and -fno-gnu-unique so reloads get fresh statics). No
# -ffast-math: any float work (the input conversion, activation tables) stays strict IEEE as in hls4ml.
CXXFLAGS: Final = (
    "-O3",
    "-fPIC",
    "-shared",
    "-std=c++17",
    "-pthread",
    "-fno-gnu-unique",
    "-fvisibility=hidden",
    '-DFPGAAS_EXPORT=__attribute__((visibility("default")))',
)
TIMEOUT_S: Final = 900.0


def compile_command(root: Path, kernel_source: Path, project: str, library: Path) -> list[str]:
    """The g++ command line, with paths relative to the artifact root `root`."""
    firmware = Path("hls") / "firmware"
    return [
        COMPILER,
        *CXXFLAGS,
        f"-I{firmware}",
        f"-I{firmware / 'ap_types'}",
        str(kernel_source.relative_to(root)),
        str(firmware / f"{project}.cpp"),
        "-o",
        str(library.relative_to(root)),
    ]


def compile_emulation(root: Path, kernel_source: Path, project: str, *, log: Path) -> Path:
    """Build `root`/emulation/libkernel.so; raises ToolMissing without g++, BuildError naming `log`."""
    require(COMPILER, "compile the kernel's emulation library")
    library = root / "emulation" / "libkernel.so"
    library.parent.mkdir(parents=True, exist_ok=True)
    run_logged(compile_command(root, kernel_source, project, library), log=log, cwd=root, timeout_s=TIMEOUT_S)
    return library
