"""Resource order management (TMF652) and ROM resource pools."""
