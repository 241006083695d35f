"""The TMF630 REST conventions shared by every TMF Open API (see docs/tmf-apis.md)."""
