"""``python -m bot_core`` is the relaydesk command."""

from bot_core.cli import main

main()
