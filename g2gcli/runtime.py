"""The one place that opens ONNX Runtime sessions and picks execution providers.

``device`` is ``auto``, ``cpu`` or ``cuda[:N]``. CUDA is never assumed from
``get_available_providers()`` alone (onnxruntime-gpu lists CUDA on machines
without a GPU and silently falls back to the CPU when its CUDA libraries are
missing): the providers reported are those the session really uses
(``session.get_providers()``), and ``note`` says why CUDA was not used when it was
asked for or ``auto`` could have used it. Torch-free.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from g2g.errors import G2GError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class DeviceError(G2GError):
    """A device string that is not ``auto``, ``cpu`` or ``cuda[:N]``."""


@dataclass
class SessionInfo:
    session: Any  # onnxruntime.InferenceSession
    providers: list[str]  # the providers the session actually uses, in priority order
    device: str  # "cpu" or "cuda:N": where it runs
    note: str = ""  # why CUDA was not used, when it was asked for or auto; empty otherwise


def parse_device(device: str) -> tuple[str, int]:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> (kind, device_id)."""
    m = re.fullmatch(r"\s*(auto|cpu|cuda)(?::(\d+))?\s*", str(device).lower())
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return m.group(1), int(m.group(2) or 0)


def cuda_device_count() -> tuple[int, str]:
    """Number of CUDA devices the NVIDIA driver reports (0 and a reason when none), without torch."""
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0:
            return 0, "the NVIDIA driver found no usable GPU (cuInit failed)"
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            return 0, "the NVIDIA driver reports no GPU"
        return count.value, ""
    return 0, "no NVIDIA driver (libcuda) on this machine"


def open_session(path: Path, device: str = "auto", threads: int | None = None) -> SessionInfo:
    """An ONNX Runtime session for ``path`` on ``device``, with the providers it really uses."""
    import onnxruntime as ort

    kind, device_id = parse_device(device)
    opts = ort.SessionOptions()
    # idle threads sleep instead of spinning: on shared or busy cores spinning workers steal the time the busy ones
    # need (MTCNN's many small runs were 3x slower under load); the cost is a little latency on an idle machine
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    path = str(path)
    note = ""
    if kind != "cpu":
        note = _cuda_unavailable(ort, device_id)
        if not note:
            session = _try_cuda(ort, path, opts, device_id, quiet=kind == "auto")
            if isinstance(session, str):
                note = session
            else:
                return SessionInfo(session, session.get_providers(), f"cuda:{device_id}")
    session = ort.InferenceSession(path, opts, providers=[CPU])
    return SessionInfo(session, session.get_providers(), "cpu", f"CUDA not used: {note}" if note else "")


def _cuda_unavailable(ort: Any, device_id: int) -> str:
    """Why CUDA cannot be used (empty when it may be)."""
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    count, why = cuda_device_count()
    if count == 0:
        return why
    if device_id >= count:
        return f"cuda:{device_id} asked for but the driver reports {count} GPU(s)"
    return ""


def _try_cuda(ort: Any, path: str, opts: Any, device_id: int, quiet: bool) -> Any:
    """A CUDA session, or a string saying why onnxruntime could not give one."""
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip's nvidia-* packages, when installed
        try:
            ort.preload_dlls()
        except Exception:
            pass
    if quiet:  # auto: the fallback is expected; the note says why, so keep the log quiet
        ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(path, opts, providers=[(CUDA, {"device_id": device_id}), CPU])
    except Exception as e:  # a provider that loads but cannot run this model
        return f"onnxruntime's CUDA provider failed ({str(e).splitlines()[0][:200]})"
    finally:
        if quiet:
            ort.set_default_logger_severity(2)
    if CUDA not in session.get_providers():
        return ("onnxruntime could not load its CUDA provider (CUDA/cuDNN libraries of the versions "
                "this onnxruntime-gpu needs are missing?); ask for device 'cuda' to see its log")
    return session


def read_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` as a dict (weights are not loaded)."""
    import onnx

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX model at {path}")
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def run_bound(info: SessionInfo, feeds: dict[str, Any]) -> list[Any]:
    """Run ``info.session`` with IO binding on its own device -> outputs as numpy arrays.

    Inputs (numpy) are copied to the session's device once, outputs are allocated
    there by ONNX Runtime and copied back once; on CUDA this avoids the per-run
    staging copies of ``session.run``. Works on the CPU too (same results).
    """
    import numpy as np
    import onnxruntime as ort

    kind, idx = ("cuda", int(info.device.split(":")[1])) if info.device.startswith("cuda") else ("cpu", 0)
    binding = info.session.io_binding()
    for name, arr in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), kind, idx))
    for out in info.session.get_outputs():
        binding.bind_output(out.name, kind, idx)
    info.session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


class CropNetwork:
    """An ONNX network that reads aligned crops, on ONNX Runtime: its session, and the crop side and alignment zoom
    its metadata names (so that no caller guesses the preprocessing)."""

    def __init__(self, path: Path, device: str = "auto", batch_size: int = 32):
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        self.info: SessionInfo = open_session(self.path, device)
        self.size = int(self.meta.get("input_size", 0))
        self.zoom = float(self.meta.get("zoom", "nan"))
        self.batch_size = batch_size
