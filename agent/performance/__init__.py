"""Live performance: outcomes that arrive after the predictions, joined to them through a
local prediction store keyed by a pseudonym, feeding rolling AUROC, Brier, calibration and
PPV per model version. See docs/validation.md ("After go-live")."""
