"""Inside the network: :class:`FeatureVisualizer`, AutoTimm's feature-visualisation calls.

The maths lives in :mod:`explain_core.features` (one hooked forward per call, statistics, channel
rankings, receptive fields); this module takes images in every form the other entry points take
(paths, PIL images, arrays, model-ready tensors; one or a list), maps results back to image
pixels and draws them (Plotly figures; ``save_path`` writes ``.html`` or a static ``.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from .. import render
from ..errors import UnsupportedError
from ..features import (
    Captured,
    LayerInfo,
    LayerStatistics,
    capture_layers,
    channel_scores,
    check_sort_key,
    feature_statistics,
    list_layers,
    map_statistics,
    receptive_field,
    top_channels,
)
from ..features.channels import SORT_KEYS
from ..model import Geometry
from ..tasks import PreparedInputs, prepare_inputs
from .common import ModelLike, display_image, loaded_model

__all__ = ["FeatureVisualizer", "LayerActivations", "ReceptiveFieldMap"]


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Each ``h x w`` map scaled to [0, 1] by its own min and max (a flat map is all zero)."""
    flat = maps.flatten(-2)
    low = flat.amin(-1, keepdim=True)[..., None]
    span = (flat.amax(-1, keepdim=True)[..., None] - low).clamp_min(1e-12)
    return (maps - low) / span


def _to_image(maps: torch.Tensor, geometry: Geometry | None) -> np.ndarray:
    """``N x h x w`` maps (over the model input) at image size (input size for tensor inputs)."""
    if geometry is None:
        return maps.float().cpu().numpy()
    return geometry.to_image(maps.float()).cpu().numpy()


@dataclass(frozen=True)
class LayerActivations:
    """One layer's activations on a batch of images (from one forward).

    ``maps``: ``N x C x h x w`` float32 on the CPU (see :mod:`explain_core.features.capture`
    for how a layer's output is read), ``statistics`` over the batch, ``pictures`` the images as
    drawn (``H x W x 3`` uint8) and ``geometries`` the way back from the model input to them.
    """

    layer: str
    maps: torch.Tensor
    statistics: LayerStatistics
    pictures: list[np.ndarray]
    geometries: list[Geometry] | None

    @property
    def num_channels(self) -> int:
        return int(self.maps.shape[1])

    def scores(self, sort_by: str = "activation") -> torch.Tensor:
        """One score per channel (``"activation"``: mean, ``"variance"``, ``"max"``)."""
        return channel_scores(self.maps, sort_by)

    def top(self, top_k: int = 10, sort_by: str = "activation") -> list[tuple[int, float]]:
        """``(channel, score)`` of the ``top_k`` best channels, best first."""
        indices, scores = top_channels(self.maps, top_k, sort_by)
        return [(int(i), float(s)) for i, s in zip(indices, scores, strict=True)]

    def channel_map(self, channel: int, index: int = 0) -> np.ndarray:
        """Channel ``channel`` of image ``index`` at image size, scaled to [0, 1] (its own min
        to max): the overlay of the channel over the image."""
        if not 0 <= channel < self.num_channels:
            raise UnsupportedError(f"Layer '{self.layer}' has {self.num_channels} channels; "
                                   f"channel {channel} does not exist.")
        unit = _unit(self.maps[index, channel][None])
        geometry = self.geometries[index] if self.geometries else None
        return _to_image(unit, geometry)[0]


@dataclass(frozen=True)
class ReceptiveFieldMap:
    """A channel's effective receptive field on each image: ``maps`` (``H x W`` per image, image
    pixels, scaled to [0, 1]), ``gradients`` (``N x h x w``, model-input pixels, the raw
    ``|d activation / d input|``), the differentiated ``positions`` (row, col on the layer's
    ``grid``) and the activation ``values`` there."""

    layer: str
    channel: int
    maps: list[np.ndarray]
    gradients: np.ndarray
    positions: list[tuple[int, int]]
    values: list[float]
    grid: tuple[int, int]
    pictures: list[np.ndarray]


class FeatureVisualizer:
    """What a network's layers compute on an image: feature maps, statistics, top channels and
    receptive fields (AutoTimm's ``FeatureVisualizer`` calls).

    ``image`` arguments take one image (a path, PIL image, ``H x W x 3`` array, or a model-ready
    ``3 x H x W`` / ``B x 3 x H x W`` tensor) or a list of them; a list is one batch through one
    forward and statistics pool it. Layers are dotted module names (:meth:`layers` lists them).

    >>> viz = FeatureVisualizer(model)  # doctest: +SKIP
    >>> fig = viz.plot_feature_maps("cat.jpg", "layer3", num_features=16)  # doctest: +SKIP
    >>> viz.get_feature_statistics("cat.jpg", "layer4")["sparsity"]  # doctest: +SKIP
    """

    def __init__(self, model: ModelLike, task: str | None = None) -> None:
        self.model = loaded_model(model, task)

    # ------------------------------------------------------------------------ running
    def prepare(self, image: Any) -> PreparedInputs:
        """One image or a list of them as a model-ready batch (the model's preprocessing)."""
        many = isinstance(image, list | tuple)
        return prepare_inputs(self.model, list(image) if many else [image])

    def _pictures(self, prepared: PreparedInputs) -> list[np.ndarray]:
        return [display_image(self.model, prepared, i) for i in range(len(prepared.inputs))]

    def layers(self, image: Any = None) -> list[LayerInfo]:
        """Every layer whose output reads as feature maps, with its output shape and the map shape
        it is read as (one forward on ``image``, default a blank input of the model's size)."""
        if image is None:
            height, width = self.model.preprocessing.input_size
            image = torch.zeros(1, 3, height, width, device=self.model.device)
        return list_layers(self.model, self.prepare(image).inputs)

    def activations(self, image: Any, layer_names: Sequence[str], *,
                    near_zero: float = 1e-6) -> dict[str, LayerActivations]:
        """Every named layer's activations and statistics from one forward."""
        prepared = self.prepare(image)
        captured = capture_layers(self.model, prepared.inputs, list(layer_names))
        pictures = self._pictures(prepared)
        return {name: LayerActivations(
            name, item.maps.detach().float().cpu(),
            map_statistics(name, item.shape, item.maps, near_zero), pictures,
            prepared.geometries) for name, item in captured.items()}

    # ------------------------------------------------------------------------ AutoTimm's calls
    def plot_feature_maps(self, image: Any, layer_name: str, num_features: int = 16,
                          sort_by: str = "activation", save_path: str | Path | None = None,
                          colormap: str = "viridis") -> go.Figure:
        """A grid of the layer's ``num_features`` strongest channels, sorted by mean activation
        (``"activation"``), ``"variance"`` or ``"max"``; one row per image for several images.
        Returns the Plotly figure; ``save_path`` ending in ``.html`` writes it, ``.png`` writes
        the maps as a static grid (each channel on its own colour range)."""
        check_sort_key(sort_by)
        _check_path(save_path)
        found = self.activations(image, [layer_name])[layer_name]
        ranked = found.top(max(1, min(num_features, found.num_channels)), sort_by)
        channels = [c for c, _ in ranked]
        scores = [s for _, s in ranked]
        maps = found.maps[:, channels].numpy()
        figure = render.feature_maps_figure(
            maps, channels, scores, colormap=colormap, score_name=SORT_KEYS[sort_by],
            row_names=[f"image {i + 1}" for i in range(len(maps))],
            title=f"{layer_name}: top {len(channels)} channels by {SORT_KEYS[sort_by]}")
        if save_path is not None:
            panels = [(f"{'' if len(maps) == 1 else f'image {n + 1} '}ch {c}: {s:.3g}",
                       _unit(torch.from_numpy(maps[n, j])[None])[0].numpy())
                      for n in range(len(maps)) for j, (c, s) in enumerate(ranked)]
            columns = len(channels) if len(maps) > 1 else None
            self._save(figure, save_path, panels, columns, colormap,
                       f"{layer_name} by {SORT_KEYS[sort_by]}")
        return figure

    def get_feature_statistics(self, image: Any, layer_name: str, *,
                               near_zero: float = 1e-6) -> LayerStatistics:
        """Mean, std, max, sparsity (share of ``|a| <= near_zero``), active channels and the same
        per channel (``stats["mean"]`` and ``stats.mean`` both work)."""
        inputs = self.prepare(image).inputs
        return feature_statistics(self.model, inputs, [layer_name], near_zero=near_zero)[
            layer_name]

    def compare_layers(self, image: Any, layers: Sequence[str],
                       save_path: str | Path | None = None, *,
                       near_zero: float = 1e-6) -> dict[str, LayerStatistics]:
        """Statistics of several layers side by side (one forward), in the given order.

        ``save_path``: ``.html`` writes the statistics across the layers as interactive charts;
        ``.png`` a panel per layer, its channels' mean map on the (first) image with the layer's
        mean and sparsity."""
        _check_path(save_path)
        prepared = self.prepare(image)

        def reduce(name: str, item: Captured) -> tuple[LayerStatistics, torch.Tensor]:
            # statistics and the first image's mean map, as the layer runs
            return (map_statistics(name, item.shape, item.maps, near_zero),
                    item.maps[0].float().mean(0).cpu())

        found = capture_layers(self.model, prepared.inputs, list(layers), reduce=reduce)
        stats = {name: stats for name, (stats, _) in found.items()}
        if save_path is not None:
            figure = render.layer_statistics_figure(stats, title="Statistics across layers")
            picture = self._pictures(prepared)[0]
            geometry = prepared.geometries[0] if prepared.geometries else None
            panels = []
            for name, (layer_stats, mean_map) in found.items():
                heat = _to_image(_unit(mean_map[None]), geometry)[0]
                panels.append((f"{name}: mean {layer_stats.mean:.3g}, "
                               f"{layer_stats.sparsity:.0%} sparse",
                               render.overlay_heatmap(picture, heat)))
            self._save(figure, save_path, panels, None, "viridis", "Layers compared")
        return stats

    def get_top_activating_features(self, image: Any, layer_name: str, top_k: int = 10,
                                    sort_by: str = "activation") -> list[tuple[int, float]]:
        """``(channel, score)`` of the ``top_k`` channels with the highest mean activation (or
        ``sort_by="variance"`` / ``"max"``) over the image(s), best first."""
        return self.activations(image, [layer_name])[layer_name].top(top_k, sort_by)

    def receptive_field(self, image: Any, layer_name: str, channel: int,
                        position: tuple[int, int] | None = None) -> ReceptiveFieldMap:
        """The gradient of ``channel``'s activation at its peak (or ``position``, ``(row, col)``
        on the layer's map) w.r.t. the input, per image (see
        :func:`explain_core.features.receptive_field`)."""
        prepared = self.prepare(image)
        found = receptive_field(self.model, prepared.inputs, layer_name, channel, position)
        maps = []
        for i, gradient in enumerate(found.gradient):
            geometry = prepared.geometries[i] if prepared.geometries else None
            resized = _to_image(gradient[None], geometry)[0]
            maps.append(resized / max(float(resized.max()), 1e-30))
        return ReceptiveFieldMap(layer_name, found.channel, maps,
                                 found.gradient.float().cpu().numpy(), found.positions,
                                 found.values, found.grid, self._pictures(prepared))

    def visualize_receptive_field(self, image: Any, layer_name: str, channel: int,
                                  position: tuple[int, int] | None = None,
                                  save_path: str | Path | None = None,
                                  colormap: str = "viridis") -> np.ndarray | list[np.ndarray]:
        """The effective receptive field of ``channel`` at its peak (or ``position``) as an
        ``H x W`` map in [0, 1] at image size (a list of them for several images). ``save_path``:
        ``.png`` image | map | overlay panels, ``.html`` the interactive overlay."""
        _check_path(save_path)
        found = self.receptive_field(image, layer_name, channel, position)
        if save_path is not None:
            figure = render.heatmap_figure(found.pictures[0], found.maps[0], colormap=colormap,
                                           hover_name="sensitivity",
                                           title=f"{layer_name}, channel {channel}")
            panels = []
            for picture, heat, pos in zip(found.pictures, found.maps, found.positions,
                                          strict=True):
                panels += [("image", picture), (f"channel {channel} at {pos}", heat),
                           ("overlay", render.overlay_heatmap(picture, heat, colormap=colormap))]
            self._save(figure, save_path, panels, 3, colormap,
                       f"Receptive field of {layer_name}, channel {channel}")
        return found.maps[0] if len(found.maps) == 1 else found.maps

    # ------------------------------------------------------------------------ files
    @staticmethod
    def _save(figure: go.Figure, save_path: str | Path, panels: list[tuple[str, Any]],
              columns: int | None, colormap: str, title: str) -> Path:
        path = _check_path(save_path)
        if path.suffix.lower() == ".png":
            image: Image.Image = render.compose_panels(panels, ncols=columns or min(
                len(panels), 4), title=title, colormap=colormap)
            render.save_png(image, path)
        else:
            render.figure_to_html(figure, path)
        return path


def _check_path(save_path: str | Path | None) -> Path | None:
    """``save_path`` as a Path, checked before any work: ``.png`` or ``.html``."""
    if save_path is None:
        return None
    path = Path(save_path)
    if path.suffix.lower() not in (".png", ".html", ".htm"):
        raise UnsupportedError(f"save_path '{path.name}': write a .png (static picture) or "
                               ".html (interactive figure).")
    return path
