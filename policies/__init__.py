"""The de-identification engine and the policies it runs.

Both stages of the appliance run this one engine with different policies. The package does no
I/O beyond reading its own bundled data files: no database, no network, no logging of values.
"""

from policies.model import Option, Policy

__all__ = ["Option", "Policy"]
