"""The TUI's screens: the sessions (list and detail), the help, and the one-line prompt."""

from certmatch.tui.screens.help import HelpScreen
from certmatch.tui.screens.prompt import PromptScreen
from certmatch.tui.screens.sessions import SessionsScreen

__all__ = ["HelpScreen", "PromptScreen", "SessionsScreen"]
