"""Platform adapters: channels (customer side) and workspaces (agent side). Each imports only bot_core and its SDK."""
