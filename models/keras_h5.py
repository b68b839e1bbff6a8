"""Reading Keras HDF5 weight files with h5py alone (no TensorFlow), the way Keras itself reads them.

Two layouts exist, both written by Keras 2 (``tf.keras``) and by Keras 3's legacy HDF5 path:

- ``model.save_weights("w.h5")``: the root group carries the attribute ``layer_names`` (every layer of the model, in
  order, weighted or not); each layer is a group named after it, whose attribute ``weight_names`` lists its weights in
  creation order (``e/kernel:0``, ``e/bias:0``; a ``/`` inside a name makes nested groups, and ``layer_group[name]``
  follows them); the datasets hold the values.
- ``model.save("m.h5")`` (whole model): the same layout under the group ``model_weights``, next to ``model_config``
  and, optionally, ``optimizer_weights``.

An attribute too large for an HDF5 object header is split by Keras into ``name0``, ``name1``, ...; that is read too.
Keras's default ``load_weights`` (``by_name=False``) matches the *weighted* layers of the file to the weighted layers
of the model in order, ignoring names; :func:`read_keras_weights` returns them in that order so callers can do the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.errors import CheckpointFormatError


@dataclass(frozen=True, eq=False)
class KerasLayerWeights:
    """The weights of one layer of a Keras HDF5 file.

    Attributes:
        name: The layer's name (``e``, ``hidden_FC``, ``dense``...).
        weight_names: The weights' names as stored (``e/kernel:0`` in Keras 2).
        values: The arrays, in ``weight_names`` order (kernel before bias for ``Dense``).
    """

    name: str
    weight_names: tuple[str, ...]
    values: tuple[np.ndarray, ...]

    def get(self, kind: str) -> np.ndarray:
        """The weight whose name ends with ``kind`` (``kernel`` or ``bias``), ignoring a ``:0`` suffix.

        Raises:
            CheckpointFormatError: The layer has no such weight.
        """
        for wname, value in zip(self.weight_names, self.values, strict=True):
            base = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            if base == kind:
                return value
        raise CheckpointFormatError(f"layer {self.name!r} has no {kind!r} weight (it has {list(self.weight_names)})")


class H5Node(Protocol):
    """An ``h5py.Group`` or ``h5py.File`` as far as this module reads its attributes (h5py ships no types)."""

    @property
    def attrs(self) -> Mapping[str, Any]:
        """The object's HDF5 attributes."""
        ...


def _decode(value: object) -> str:
    return value.decode("utf8") if isinstance(value, bytes | np.bytes_) else str(value)


def read_attribute_list(group: H5Node, name: str) -> list[str]:
    """Reads a list-of-strings attribute as Keras's ``load_attributes_from_hdf5_group`` does (chunks included).

    Args:
        group: An ``h5py.Group`` (or ``File``).
        name: The attribute (``layer_names`` or ``weight_names``).

    Returns:
        The strings; empty when the attribute is absent.
    """
    attrs = group.attrs
    if name in attrs:
        return [_decode(v) for v in np.atleast_1d(attrs[name])]
    out: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in attrs:
        out.extend(_decode(v) for v in np.atleast_1d(attrs[f"{name}{chunk}"]))
        chunk += 1
    return out


def read_keras_weights(path: str | Path) -> list[KerasLayerWeights]:
    """Reads the weighted layers of a Keras HDF5 file (``save_weights`` or whole-model ``save``), in file order.

    Args:
        path: The ``.h5`` file.

    Returns:
        One entry per layer that has weights, in the order of the file's ``layer_names`` (Keras's matching order).

    Raises:
        CheckpointFormatError: The file is not HDF5 or not in a Keras layout.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: not an HDF5 file ({exc})") from None
    with f:
        root = f.get("model_weights", f)
        layer_names = read_attribute_list(root, "layer_names")
        if not layer_names:
            raise CheckpointFormatError(f"{path}: no 'layer_names' attribute; not a Keras weights file")
        layers = []
        for lname in layer_names:
            if lname not in root:
                raise CheckpointFormatError(f"{path}: layer {lname!r} is listed but has no group")
            group = root[lname]
            wnames = read_attribute_list(group, "weight_names")
            if not wnames:
                continue
            try:
                values = tuple(np.asarray(group[w]) for w in wnames)
            except KeyError as exc:
                raise CheckpointFormatError(f"{path}: layer {lname!r} lacks a listed weight ({exc})") from None
            layers.append(KerasLayerWeights(name=lname, weight_names=tuple(wnames), values=values))
    return layers
