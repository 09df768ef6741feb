"""relaydesk storage: tortoise-orm models and migrations, the event bus, locks. Knows nothing above it."""
