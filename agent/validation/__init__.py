"""Local validation: does this model work on this site's own labelled history?

``edge-agent validate`` scores each labelled (patient, time) through the one scoring
pipeline, exactly as the live path would, and reports discrimination, calibration and the
alert thresholds' operating figures beside the bundle's own training figures. The
statistics are pure functions over plain lists (``metrics``, ``calibration``): the agent's
runtime stays free of numpy, and the sizes of a site's history are well within pure
Python's reach. See docs/validation.md.
"""
