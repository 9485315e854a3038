"""The help screen: every key (from the key table), the filter syntax, verdicts and causes."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
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
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%;
        height: 90%;
        border: thick $accent;
        background: $panel;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        lines = Text()
        for shown, description in keys.help_lines():
            lines.append(f"  {shown:<13} ", f"bold {colours.CYAN}")
            lines.append(f"{description}\n")
        verdicts = Text()
        for verdict, symbol in VERDICT_SYMBOLS.items():
            verdicts.append(f"  {symbol} {verdict}\n")
        verdicts.append(
            "  The badge shows the worst severity instead: ‼ security for a security finding "
            "whatever the verdict, ✗ match when a failing cause holds beside a match, "
            "⚠ match with warnings only; ✓ only for a match with no failing cause.\n"
        )
        causes = Text()
        for cause in CAUSES.values():
            causes.append(f"  {cause.id:<28}", colours.CYAN)
            causes.append(f"{cause.title} ({cause.severity})\n")
        with VerticalScroll():
            yield Static(Text("certmatch: keys (q or Esc closes this help)", style="bold"))
            yield Static(lines)
            yield Static(Text("\nFilter (f)", style="bold"))
            yield Static(FILTER_HELP)
            yield Static(Text("\nVerdicts (the symbol is shown even without colour)", style="bold"))
            yield Static(verdicts)
            yield Static(Text("Cause ids (for cause: in the filter)", style="bold"))
            yield Static(causes)

    def action_close(self) -> None:
        self.dismiss(None)
