"""pntk's exception types: one base, :class:`PntkError`, and a few kinds under it.

Each kind also derives from the built-in exception that fits (``ValueError`` for bad models and inputs,
``OSError`` for stores on disk), so code that catches those keeps working. Every message says what was wrong
and what to do, in words that a command line can print as they are.

>>> from pntk.errors import InputError, PntkError
>>> issubclass(InputError, PntkError) and issubclass(InputError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "InputError",
    "ModelError",
    "PntkError",
    "RankMismatchError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "StructureChangedError",
]


class PntkError(Exception):
    """The base of every error pntk raises on purpose: catch it to catch them all."""


class ModelError(PntkError, ValueError):
    """The model cannot give a kernel pntk can vouch for: samples that interact or are random, an output
    that is not ``[B, O]``, parameters without values, a forward that fails."""


class InputError(PntkError, ValueError):
    """Inputs or options that do not fit the model: wrong dtype, shape, device, or ``params`` that do not
    match the model's parameters."""


class CheckpointError(PntkError, ValueError):
    """A checkpoint file that cannot be loaded safely: truncated, garbage, not tensors, or a pickle that
    would run code."""


class StoreError(PntkError, OSError):
    """A kernel store that cannot be read or written as asked: read-only, full disk, missing files."""


class StoreCorruptError(StoreError):
    """Tiles of a kernel store whose bytes are not those written: damaged, truncated or missing chunks."""


class StoreLockedError(StoreError, RuntimeError):
    """Another process is writing to the store."""


class StoreMismatchError(PntkError, ValueError):
    """The store at ``out`` holds another computation (other model, behaviour, data, kind, shape, ...)."""


class RankMismatchError(PntkError, RuntimeError):
    """The processes of one ``torch.distributed`` job disagree on the model, the inputs or the options."""


class StructureChangedError(PntkError, RuntimeError):
    """The model computed a block otherwise than the structured engine's plan found on its probe samples
    (data-dependent control flow, an output that reads other rows for other samples): the engine's factors
    would not be the model's. ``engine="auto"`` switches by itself, to the Jacobian engine in :func:`pntk.kernel`
    and to vector products in :func:`pntk.operator`; elsewhere the message says which exact path to take.

    The structured engine raises it with the cause alone; each entry point adds what to do there
    (:meth:`advised`).
    """

    def advised(self, advice: str) -> StructureChangedError:
        """The same error with ``advice`` (what to use instead, at the entry point that raises it) appended.

        >>> str(StructureChangedError("a block differs").advised("use engine='jacobian'"))
        "a block differs; use engine='jacobian'"
        """
        return StructureChangedError(f"{self}; {advice}")
