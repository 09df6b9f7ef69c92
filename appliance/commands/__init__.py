"""Subcommands of ``tce``, one module each.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` where ``run(args) -> int``. The CLI imports the modules below lazily, in this order,
and skips a module that does not exist yet, so a name can be listed here before its module is
written and adding a command never requires touching ``cli.py``.
"""

COMMAND_MODULES: list[str] = [
    "appliance.commands.init",
    "appliance.commands.config",
    "appliance.commands.policy",
    "appliance.commands.deidentify",
    "appliance.commands.stage1",
    "appliance.commands.stage2",
    "appliance.commands.receiver",
    "appliance.commands.status",
    "appliance.commands.quarantine",
    "appliance.commands.verify",
    "appliance.commands.demo",
]
