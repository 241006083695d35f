"""Customer notifications: templates per event, pluggable channels, delivery outside transactions."""
