"""The `flexdet` sub-commands: each module adds its arguments and runs one verb."""
