"""Files that long runs write and read back: written atomically, read without running code.

Checkpoints hold tensors and plain Python data only (a spec of the modules plus their
``state_dict``), so ``torch.load(..., weights_only=True)`` reads them: loading a file never runs
code from it, and files move across torch versions.
"""
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch


def atomic_write(path, write):
    """Write ``path`` by ``write(file)`` (a binary file object) into a temporary file beside it,
    then rename it into place: a run killed while writing leaves the old file or none, never half
    a file. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_state(path, state):
    """``torch.save(state, path)`` atomically; ``state`` a dict of tensors and plain Python data."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_state(path, fix):
    """The dict ``save_state`` wrote, read with ``weights_only=True``. ``fix`` (str) ends the error
    message of a file that cannot be read (what the user should do)."""
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; a truncated one is no zip either
        raise ValueError(f"checkpoint {path} is unreadable (not a file of torch.save, or truncated): {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" (it holds a {found.group(1)})" if found else ""
        raise ValueError(f"checkpoint {path} holds more than tensors and plain data{what}: a file of an older "
                         f"convexgan, which pickled whole modules, or not a convexgan file; it is not loaded, "
                         f"since loading it could run code: {fix}") from err
    except Exception as err:  # a damaged archive: torch raises RuntimeError, EOFError, OSError...
        raise ValueError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}): {fix}") from err
