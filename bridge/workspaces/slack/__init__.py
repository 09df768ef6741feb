"""The Slack workspace (slack-bolt): a private channel or a thread per conversation."""

from bridge.workspaces.slack.workspace import SlackWorkspace

__all__ = ["SlackWorkspace"]
