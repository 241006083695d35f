"""Verification of the running platform: the saga fault matrix (``strowger verify sagas``)."""
