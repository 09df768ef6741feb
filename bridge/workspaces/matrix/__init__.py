"""Matrix workspace: agents answer customers from Matrix rooms, each customer a ghost user of an appservice.

``devserver`` starts a throwaway Synapse homeserver on loopback for ``relaydesk dev-homeserver`` and the tests.
"""
