"""Training the kidney compartment model (``shindan kidney train``), in the order data flows:

* :mod:`~shindan.kidney.training.labelled`: :class:`LabelledImage` and :class:`Cutout`, the one
  in-memory form of every training source;
* :mod:`~shindan.kidney.training.builtin_sets` and
  :mod:`~shindan.kidney.training.user_annotations`: the shared reference sets (AAPI, HuBMAP,
  AIDPATH, phantoms) and a user's annotated slides, read as labelled images;
* :mod:`~shindan.kidney.training.stain_transfer`: colour statistics and Reinhard transfer
  between slides;
* :mod:`~shindan.kidney.training.sampler`: training tiles (crops, composites, glass edges,
  stain augmentation);
* :mod:`~shindan.kidney.training.builtin_recipe`: the built-in recipe's split, settings and card
  notes;
* :mod:`~shindan.kidney.training.scoring`: held-out Dice as the analysis labels;
* :mod:`~shindan.kidney.training.run`: :func:`train_compartments`, which feeds the engine's
  segmenter loop (:mod:`shindan.engine.train_segmenter`);
* :mod:`~shindan.kidney.training.cli`: the ``kidney train`` command's options.
"""
