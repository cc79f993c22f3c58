"""Read an hls4ml 1.3.0 io_parallel project (`firmware/`) into plain layer descriptions.

Only the generated text is read (no hls4ml or TensorFlow import): the call sequence in
`firmware/<project>.cpp`, the typedefs in `firmware/defines.h`, the `struct configN` blocks in
`firmware/parameters.h` and the weight arrays in `firmware/weights/*.h`. Anything outside the
known templates raises `UnsupportedLayer` naming the construct.

Files are read through a `ReadText` (the disk by default): a server passes one that reads the
verified bytes of an artifact (`fpgaas.kernels.twin.open_cpu_kernel`), so the weights it serves
are the ones it verified, not whatever is on disk when the engine is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpgaas.kernels.engine.errors import UnsupportedLayer
from fpgaas.kernels.engine.fixedpoint import FixedType, from_double, parse_type

_TYPEDEF_RE = re.compile(r"^\s*typedef\s+(.+?)\s+(\w+)\s*;", re.M)
_STRUCT_RE = re.compile(r"struct\s+(\w+)\s*:\s*nnet::(\w+)\s*\{(.*?)\n\};", re.S)
_CONST_RE = re.compile(r"static\s+const\s+(?:unsigned|int|bool|float|double)\s+(\w+)\s*=\s*([^;]+);")
_CALL_RE = re.compile(r"^\s*nnet::(\w+)<([^>]*)>\s*\(([^;]*)\)\s*;", re.M)
_TOP_RE = r"void\s+{name}\s*\((.*?)\)\s*\{{"
_PORT_RE = re.compile(r"(\w+)\s+(\w+)\s*\[\s*(\d+)\s*\]")
_ARRAY_RE = re.compile(r"(\w+)\s+(\w+)\s*\[\s*(\d+)\s*\]\s*=\s*\{([^}]*)\}", re.S)
_ALLOWED_STATEMENTS = {"load_weights_from_txt"}

ReadText = Callable[[Path], str | None]  # a file's text, None when there is no such file


def read_disk(path: Path) -> str | None:
    """The default `ReadText`: the file as it is on disk now."""
    return path.read_text() if path.is_file() else None


@dataclass(frozen=True)
class LayerCall:
    """One `nnet::<function><types...>(args...)` statement of the top function."""

    function: str
    template_args: tuple[str, ...]
    args: tuple[str, ...]
    comment: str  # the Keras layer name hls4ml writes after the call


@dataclass(frozen=True)
class HlsProject:
    """The parts of a generated project the engine needs."""

    inputs: tuple[tuple[str, str, int], ...]  # (type name, variable, size)
    outputs: tuple[tuple[str, str, int], ...]
    calls: tuple[LayerCall, ...]
    typedefs: dict[str, str]
    configs: dict[str, dict[str, str]]  # struct name -> {constant or typedef name: value}
    config_bases: dict[str, str]  # struct name -> nnet base struct
    weights_dir: Path
    read: ReadText = read_disk
    _arrays: dict[str, tuple[str, list[float]]] = field(default_factory=dict, repr=False)

    def resolve(self, name: str) -> FixedType:
        """The ap_* type a (possibly chained) typedef name stands for."""
        seen = set()
        while name in self.typedefs:
            if name in seen:
                raise UnsupportedLayer(f"typedef cycle through {name}")
            seen.add(name)
            name = self.typedefs[name]
        return parse_type(name)

    def config(self, struct: str) -> dict[str, str]:
        if struct not in self.configs:
            raise UnsupportedLayer(f"struct {struct} not found in parameters.h")
        return self.configs[struct]

    def config_type(self, struct: str, role: str) -> FixedType:
        cfg = self.config(struct)
        if role not in cfg:
            raise UnsupportedLayer(f"struct {struct} has no typedef {role}")
        return self.resolve(cfg[role])

    def array(self, name: str, size: int) -> tuple[FixedType, np.ndarray]:
        """The weight array `name` as raw integers of its declared type."""
        if name not in self._arrays:
            self._arrays.update(_read_arrays(self.weights_dir / f"{name}.h", self.read))
        if name not in self._arrays:
            raise UnsupportedLayer(f"weight array {name} not found in {self.weights_dir}/{name}.h")
        type_name, values = self._arrays[name]
        if len(values) != size:
            raise UnsupportedLayer(f"weight array {name} has {len(values)} values, expected {size}")
        t = self.resolve(type_name)
        return t, from_double(np.array(values, dtype=np.float64), t)


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _read_arrays(path: Path, read: ReadText) -> dict[str, tuple[str, list[float]]]:
    raw = read(path)
    if raw is None:
        return {}
    text = re.sub(r"//[^\n]*", "", _strip_comments(raw))
    out: dict[str, tuple[str, list[float]]] = {}
    for type_name, name, _size, body in _ARRAY_RE.findall(text):
        tokens = [tok.strip() for tok in body.split(",") if tok.strip()]
        try:
            # C++ reads a decimal literal as the nearest double; Python's float() does the same.
            values = [float(tok.rstrip("fFlL")) for tok in tokens]
        except ValueError as exc:
            raise UnsupportedLayer(f"weight array {name} in {path.name} holds a non-numeric literal") from exc
        out[name] = (type_name, values)
    return out


def _split_args(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def read_project(hls_dir: Path, project_name: str = "myproject", read: ReadText = read_disk) -> HlsProject:
    """Parse `hls_dir/firmware/` of an hls4ml io_parallel project, every file read with `read`."""
    fw = Path(hls_dir) / "firmware"
    texts = {}
    for name in (f"{project_name}.cpp", "defines.h", "parameters.h"):
        text = read(fw / name)
        if text is None:
            raise UnsupportedLayer(f"{name} not found in {fw}")
        texts[name] = _strip_comments(text)
    top, defines, params = texts[f"{project_name}.cpp"], texts["defines.h"], texts["parameters.h"]

    typedefs = {name: spelling for spelling, name in _TYPEDEF_RE.findall(defines)}
    configs: dict[str, dict[str, str]] = {}
    bases: dict[str, str] = {}
    for struct, base, body in _STRUCT_RE.findall(params):
        entries = {k: v.strip() for k, v in _CONST_RE.findall(body)}
        entries.update({name: spelling for spelling, name in _TYPEDEF_RE.findall(body)})
        for alias, target in re.findall(r"using\s+(\w+)\s*=\s*([^;]+);", body):
            entries[alias] = " ".join(target.split())
        configs[struct] = entries
        bases[struct] = base

    sig = re.search(_TOP_RE.format(name=re.escape(project_name)), top, re.S)
    if sig is None:
        raise UnsupportedLayer(f"top function {project_name}(...) not found in {project_name}.cpp")
    ports = _PORT_RE.findall(sig.group(1))
    if len(ports) < 2 or sig.group(1).count("[") != len(ports):
        raise UnsupportedLayer(f"top function signature not understood: {sig.group(1).strip()}")
    port_list = tuple((t, v, int(n)) for t, v, n in ports)
    body = top[sig.end() :]
    body = re.sub(r"#ifndef __SYNTHESIS__.*?#endif", "", body, flags=re.S)
    calls: list[LayerCall] = []
    for m in _CALL_RE.finditer(body):
        line_end = body.find("\n", m.end())
        comment = body[m.end() : line_end if line_end >= 0 else None].strip().lstrip("/").strip()
        calls.append(LayerCall(m.group(1), _split_args(m.group(2)), _split_args(m.group(3)), comment))
    stray = [s for s in re.findall(r"nnet::(\w+)", body) if s not in {c.function for c in calls}]
    stray = [s for s in stray if s not in _ALLOWED_STATEMENTS]
    if stray:
        raise UnsupportedLayer(f"statement nnet::{stray[0]} in {project_name}.cpp is not understood")
    if not calls:
        raise UnsupportedLayer(f"no nnet:: layer calls found in {project_name}.cpp")
    return HlsProject(
        inputs=port_list[:-1],
        outputs=port_list[-1:],
        calls=tuple(calls),
        typedefs=typedefs,
        configs=configs,
        config_bases=bases,
        weights_dir=fw / "weights",
        read=read,
    )
