"""The chaos suite: scenarios of injected failures against a multi-process cluster, judged by invariants.

See docs/chaos.md. :mod:`strowger.chaos.runner` (scenarios), :mod:`strowger.chaos.faults`
(injectors), :mod:`strowger.chaos.invariants` (exactly-once effect counts).
"""
