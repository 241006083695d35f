"""Strowger's business components (catalog, ordering, inventory...), each serving its TMF APIs."""
