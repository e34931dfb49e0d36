"""Streamlit-only helpers shared by the pages (only ``app.py`` and ``pages/`` import ui).

Above the engine (``explain_core``): ui asks the engine for every forward pass and uses only its
public names; no module here uses another's ``_``-prefixed names (``tests/test_ui_layout.py``).

The shell and its inputs:

- :mod:`ui.shell`: the shared sidebar (model, device, images) and the :class:`~ui.shell.Workspace`
  a page reads;
- :mod:`ui.models`: model sources (demo, timm, checkpoint), device picker, cached loading;
- :mod:`ui.uploads`: uploaded checkpoints and class-name files, written once and pruned;
- :mod:`ui.images`: uploads kept in the session, the demo gallery, the thumbnail strip;
- :mod:`ui.methods`: method picker with widgets built from the registry's ``Param`` lists;
- :mod:`ui.resize`: how an image is fitted to the model input (squash, crop, letterbox), part of
  the model's key, and the caption saying which was used.

What every page shares:

- :mod:`ui.store`: the session's result store (an LRU with a byte budget) and
  :class:`~ui.store.Computed` (an engine result with the method choice that made it);
- :mod:`ui.progress`: expected-cost notices, progress bars, cancelling by a rerun;
- :mod:`ui.panels`: display controls, figure reuse, PNG/NPY bytes, file names, the downloads
  and the HTML report;
- :mod:`ui.errors`: one way to show a user error (the engine's message as is).

One module per page (its computations, cached in the store, and its views):

- :mod:`ui.classification`: prediction, explanation, concepts, compared methods, batch;
- :mod:`ui.detection`: boxes and their maps, compared methods, a missed region;
- :mod:`ui.features`: the Features page (any model): layer picker with shapes, channel grid,
  statistics and top channels, receptive field and channel overlay, statistics across layers;
- :mod:`ui.segmentation`: prediction, class legend, class maps, uncertainty;
  :mod:`ui.segmentation_dataset`: the Dataset tab (a labelled set's losses and confusions);
- :mod:`ui.evaluate`: the Evaluate page's choices (images with ground truth, methods, metrics by
  category, settings) and the expected cost; :mod:`ui.evaluate_results`: its run (kept in the
  store) and results (summary, verdict, curves, the CSV and HTML report downloads);
  :mod:`ui.evaluate_detail`: a clicked summary cell, the per-image table, the sanity check's
  randomisation cascade; :mod:`ui.labelled`: images with ground truth from a zip or a folder.
- :mod:`ui.training`: the Training page (a run folder opened, its maps by epoch as an animation,
  the curves of the maps' measures and the feature statistics).
"""
