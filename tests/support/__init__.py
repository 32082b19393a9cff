"""Helpers shared by more than one test folder (the one place for them)."""
