"""The help screen: every key (from the key table), the filter syntax, verdicts and causes."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from certmatch.core.causes import CAUSES
from certmatch.core.report import VERDICT_SYMBOLS
from certmatch.tui import colours, keys
from certmatch.tui.keys import View
from certmatch.tui.model import FILTER_HELP


class HelpScreen(ModalScreen[None]):
    """Every key binding with its description, the filter syntax, the verdicts and cause ids."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings(View.HELP)
    DEFAULT_CSS = (
        """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%;
        height: 90%;
        border: thick $accent;
        background: $panel;
        padding: 0 1;
    }
    HelpScreen .help-row { height: auto; }
    HelpScreen .help-keys { width: 23; padding-left: 2; }
    HelpScreen .help-text { width: 1fr; }
    HelpScreen .help-heading { text-style: bold; margin-top: 1; }
    """
        + (
            # As wide as the longest cause id, its indent and a space before its title.
            f"HelpScreen .help-cause {{ width: {max(map(len, CAUSES)) + 3}; padding-left: 2; }}"
        )
    )

    def compose(self) -> ComposeResult:
        # Two columns, so that a line that wraps keeps its indent.
        with VerticalScroll():
            yield Static(
                Text(
                    "certmatch: keys (q or Esc closes this help; j/k and space/b scroll it)",
                    style="bold",
                )
            )
            for shown, description in keys.help_lines():
                yield _row(shown, description, "help-keys")
            yield Static("Filter (f)", classes="help-heading")
            yield Static(FILTER_HELP, classes="help-text")
            yield Static(
                "Verdicts (the symbol is shown even without colour)", classes="help-heading"
            )
            for verdict, symbol in VERDICT_SYMBOLS.items():
                yield _row(symbol, verdict, "help-keys")
            yield Static(
                "The badge shows the worst severity instead: ‼ security for a security finding "
                "whatever the verdict, ✗ match when a failing cause holds beside a match, "
                "⚠ match with warnings only; ✓ only for a match with no failing cause.",
                classes="help-text",
            )
            yield Static("Cause ids (for cause: in the filter)", classes="help-heading")
            for cause in CAUSES.values():
                yield _row(cause.id, f"{cause.title} ({cause.severity})", "help-cause")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_help_line_down(self) -> None:
        self.query_one(VerticalScroll).scroll_down(animate=False)

    def action_help_line_up(self) -> None:
        self.query_one(VerticalScroll).scroll_up(animate=False)

    def action_help_page_down(self) -> None:
        self.query_one(VerticalScroll).scroll_page_down(animate=False)

    def action_help_page_up(self) -> None:
        self.query_one(VerticalScroll).scroll_page_up(animate=False)

    def action_help_top(self) -> None:
        self.query_one(VerticalScroll).scroll_home(animate=False)

    def action_help_end(self) -> None:
        self.query_one(VerticalScroll).scroll_end(animate=False)


def _row(left: str, text: str, left_class: str) -> Horizontal:
    return Horizontal(
        Static(Text(left, style=f"bold {colours.CYAN}"), classes=left_class),
        Static(Text(text), classes="help-text"),
        classes="help-row",
    )
