from bundle_factory import publisher_key, trust

__all__ = ["publisher_key", "trust"]
