"""A yes/no question: quitting while the proxy records."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from certmatch.tui import keys
from certmatch.tui.keys import View


class ConfirmScreen(ModalScreen[bool]):
    """Ask a question; dismiss with True (y) or False (n, Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings(View.CONFIRM)
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 70;
        max-width: 100%;
        height: auto;
        border: thick $error;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, question: str, detail: str) -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question, style="bold"))
            yield Static(Text(self.detail))
            yield Static(Text("y: yes   n or Esc: no", style="bold"))

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
