"""Candidate versions: a newly pulled version staged beside the active one, scored in
shadow or answering a canary share of patients, compared as it runs and promoted only
through gates (see docs/adr/0010-candidate-versions.md)."""
