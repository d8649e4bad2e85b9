"""The stack's ComponentResources, one topic each; ``infra/stack.py`` wires them together."""
