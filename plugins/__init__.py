"""Built-in feature plugins. Each uses only the plugin API of bot_core."""
