"""The one-line prompt (filter, find)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from certmatch.core.report import shown_prose
from certmatch.tui import keys
from certmatch.tui.keys import View


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line; dismiss with the text (enter) or None (escape).

    ``check`` returns an error message for text that cannot be used; the
    prompt then stays open and shows it.
    """

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings(View.PROMPT)
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
    PromptScreen .prompt-error { color: #ff6e6e; text-style: bold; }  /* colours.RED */
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
            # The problem quotes what was typed: Text, so a "[" in it is not markup.
            self.query_one("#prompt-error", Static).update(Text(shown_prose(problem)))
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
