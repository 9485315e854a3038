"""Modal screens: the one-line prompt (filter, find) and the help."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from certmatch.core.causes import CAUSES
from certmatch.tui.model import FILTER_HELP, VERDICT_SYMBOLS


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line; dismiss with the text (enter) or None (escape).

    ``check`` returns an error message for text that cannot be used; the
    prompt then stays open and shows it.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    PromptScreen {
        align: center bottom;
        background: $background 40%;
    }
    PromptScreen > Vertical {
        height: auto;
        width: 100%;
        padding: 0 1;
        background: $panel;
        border-top: tall $accent;
    }
    PromptScreen .prompt-title { text-style: bold; }
    PromptScreen .prompt-help { color: $text-muted; }
    PromptScreen .prompt-error { color: $error; text-style: bold; }
    """

    def __init__(
        self,
        title: str,
        *,
        value: str = "",
        placeholder: str = "",
        help_text: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.help_text = help_text
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="prompt-title")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static("", classes="prompt-error", id="prompt-error")
            if self.help_text:
                yield Static(self.help_text, classes="prompt-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = self.check(event.value) if self.check else None
        if problem:
            self.query_one("#prompt-error", Static).update(problem)
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key binding with its description, the filter syntax, the verdicts and cause ids."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close help"),
    ]
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

    def __init__(self, bindings: Iterable[tuple[str, str]]) -> None:
        super().__init__()
        self.bindings_text = list(bindings)

    def compose(self) -> ComposeResult:
        keys = Text()
        for key, description in self.bindings_text:
            keys.append(f"  {key:<14}", "bold cyan")
            keys.append(f"{description}\n")
        verdicts = Text()
        for verdict, symbol in VERDICT_SYMBOLS.items():
            verdicts.append(f"  {symbol} {verdict}\n")
        causes = Text()
        for cause in CAUSES.values():
            causes.append(f"  {cause.id:<28}", "cyan")
            causes.append(f"{cause.title} ({cause.severity})\n")
        with VerticalScroll():
            yield Static(Text("certmatch: keys (escape closes this help)", style="bold"))
            yield Static(keys)
            yield Static(Text("\nFilter (f)", style="bold"))
            yield Static(FILTER_HELP)
            yield Static(Text("\nVerdicts (the symbol is shown even without colour)", style="bold"))
            yield Static(verdicts)
            yield Static(Text("Cause ids (for cause: in the filter)", style="bold"))
            yield Static(causes)

    def action_close(self) -> None:
        self.dismiss(None)
