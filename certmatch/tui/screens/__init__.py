"""The TUI's screens: the sessions (list and detail), the help, the one-line prompt and a
yes/no question."""

from certmatch.tui.screens.confirm import ConfirmScreen
from certmatch.tui.screens.help import HelpScreen
from certmatch.tui.screens.prompt import PromptScreen
from certmatch.tui.screens.sessions import SessionsScreen

__all__ = ["ConfirmScreen", "HelpScreen", "PromptScreen", "SessionsScreen"]
