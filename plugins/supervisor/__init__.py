"""The supervisor's view: threshold alerts and a daily digest with a chart in each team's ops room."""

from plugins.supervisor.plugin import SupervisorPlugin

__all__ = ["SupervisorPlugin"]
