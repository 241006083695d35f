"""The network activation simulator: executes ActivateService/DeactivateService with latency and faults."""
