"""Mapping: a site's YAML binds its data (codes, units, categories) to a model's inputs.

``load_mapping(path, manifest)`` checks and compiles a mapping file; ``SiteMapping.extract
(record, as_of)`` turns one ``PatientRecord`` into the model's ``FeatureVector`` with the
provenance of every value. See docs/mapping.md.
"""

from agent.mapping.compile import load_mapping
from agent.mapping.site import SiteMapping

__all__ = ["SiteMapping", "load_mapping"]
