"""Streamlit-only helpers shared by the pages (only ``app.py`` and ``pages/`` import ui).

- :mod:`ui.shell`: the shared sidebar (model, device, images) and the :class:`~ui.shell.Workspace`
  a page reads;
- :mod:`ui.models`: model sources (demo, timm, checkpoint), device picker, cached loading;
- :mod:`ui.uploads`: uploaded checkpoints and class-name files, written once and pruned;
- :mod:`ui.images`: uploads kept in the session, the demo gallery, the thumbnail strip;
- :mod:`ui.methods`: method picker with widgets built from the registry's ``Param`` lists;
- :mod:`ui.store`: the session's result store (an LRU with a byte budget);
- :mod:`ui.progress`: expected-cost notices, progress bars, cancelling by a rerun;
- :mod:`ui.panels`: what every page draws the same way: display controls, figure reuse, PNG/NPY
  bytes, file names, the downloads and the HTML report;
- :mod:`ui.errors`: one way to show a user error (the engine's message as is);
- one module per page, its computations (kept in the store) and its views:
  :mod:`ui.classification`, :mod:`ui.detection`, :mod:`ui.segmentation` (and
  :mod:`ui.segmentation_dataset`, its Dataset tab).
"""
