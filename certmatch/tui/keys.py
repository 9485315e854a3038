"""Every key of the TUI in one table, and what is generated from it.

Each ``Key`` says which keys run which action, where it applies, and what the
footer, the help screen and the command palette say about it. The screens'
``BINDINGS``, the help text and the palette's commands are all generated from
``KEYS``, so a key cannot be bound without being documented, or documented
without being bound (``tests/test_tui.py`` checks both).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Flag, auto

from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.dom import DOMNode


class View(Flag):
    """Where a key applies."""

    LIST = auto()  # the session list with the detail pane below it
    DETAIL = auto()  # the detail pane full screen
    HELP = auto()  # the help screen
    PROMPT = auto()  # a one-line prompt (filter, find)
    CONFIRM = auto()  # a yes/no question
    SESSIONS = LIST | DETAIL


# The footer shows a group as one entry, its keys with slashes: "j/k Move", "[/] Session".
MOVE = Binding.Group("Move")
SESSION = Binding.Group("Session")
MATCH = Binding.Group("Match")


@dataclass(frozen=True, slots=True)
class Key:
    """One row of the key table."""

    keys: str  # Textual key names, comma-separated: "j,down"
    action: str  # the action it runs on the screen that binds it
    where: View
    label: str  # the footer's word for it
    # The help screen's line; "" when the line of the key before covers it too; None when the
    # list's line for the same keys says what they do in the full-screen detail as well.
    help: str | None
    footer: bool = True  # shown in the footer
    palette: str = ""  # the command palette's title; "" when it is not in the palette
    palette_help: str = ""  # the palette's line under the title (the key is appended)
    key_display: str | None = None  # what the footer shows instead of the first key
    group: Binding.Group | None = None  # footer group
    textual: bool = False  # bound by Textual itself, not by a BINDINGS list

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.keys.split(","))

    @property
    def shown(self) -> str:
        """The keys as typed, for the help screen: "j / ↓"."""
        return " / ".join(_DISPLAY.get(name, name) for name in self.names)

    def binding(self) -> Binding:
        return Binding(
            self.keys,
            self.action,
            self.label,
            show=self.footer,
            key_display=self.key_display,
            group=self.group,
        )


# How the help screen writes a Textual key name.
_DISPLAY = {
    "down": "↓",
    "up": "↑",
    "home": "Home",
    "end": "End",
    "pagedown": "PgDn",
    "pageup": "PgUp",
    "slash": "/",
    "question_mark": "?",
    "left": "←",
    "right": "→",
    "escape": "Esc",
    "right_square_bracket": "]",
    "left_square_bracket": "[",
    "space": "space",
}

# Help and quit come first: the footer shows keys in table order and leaves out the ones that do
# not fit a narrow terminal (whole, never cut), and these two must always be there; then what a
# newcomer needs first (move, detail, filter, find). g, G, PgDn and PgUp are in the help only. Keys that mean one thing in the list
# and another in the full-screen detail (j, PgDn, g...) are two rows with two actions, as in
# less: in the detail they scroll it, and ] / [ change the session in both.
KEYS: tuple[Key, ...] = (
    Key(
        "question_mark",
        "help",
        View.SESSIONS,
        "Help",
        "this help",
        palette="Help",
        palette_help="Every key, the filter syntax and the cause ids",
    ),
    Key("q", "quit", View.LIST, "Quit", "quit (from the list; asks first while a proxy records)"),
    Key(
        "escape,q",
        "back",
        View.DETAIL,
        "Back",
        "back from the full-screen detail to the list",
        key_display="q",
    ),
    Key(
        "j,down",
        "cursor_down",
        View.LIST,
        "Next session",
        "next session (in the full-screen detail: scroll a line down)",
        key_display="j",
        group=MOVE,
    ),
    Key(
        "k,up",
        "cursor_up",
        View.LIST,
        "Previous session",
        "previous session (in the full-screen detail: scroll a line up)",
        key_display="k",
        group=MOVE,
    ),
    Key(
        "g,home",
        "top",
        View.LIST,
        "First session",
        "first session (in the full-screen detail: its top)",
        palette="First session",
        palette_help="Go to the top",
        key_display="g",
        group=MOVE,
        footer=False,
    ),
    Key(
        "G,end",
        "bottom",
        View.LIST,
        "Last session",
        "last session, the newest (in the full-screen detail: its end)",
        palette="Last session",
        palette_help="Go to the bottom",
        key_display="G",
        group=MOVE,
        footer=False,
    ),
    Key(
        "pagedown",
        "page_down",
        View.LIST,
        "Page down",
        "a page of the list down / up (in the full-screen detail: of the detail)",
        key_display="PgDn",
        group=MOVE,
        footer=False,
    ),
    Key(
        "pageup", "page_up", View.LIST, "Page up", "", key_display="PgUp", group=MOVE, footer=False
    ),
    Key("j,down", "detail_line_down", View.DETAIL, "Scroll", None, footer=False),
    Key("k,up", "detail_line_up", View.DETAIL, "Scroll up", None, footer=False),
    Key("pagedown", "detail_page_down", View.DETAIL, "Page down", None, footer=False),
    Key("pageup", "detail_page_up", View.DETAIL, "Page up", None, footer=False),
    Key("g,home", "detail_top", View.DETAIL, "Top", None, footer=False),
    Key("G,end", "detail_end", View.DETAIL, "End", None, footer=False),
    Key(
        "enter",
        "toggle_detail",
        View.SESSIONS,
        "Detail",
        "detail pane full screen, or back",
        palette="Detail full screen",
        palette_help="Show the detail pane alone, or back",
    ),
    Key(
        "f",
        "filter",
        View.SESSIONS,
        "Filter",
        "filter by host, protocol, cause id, verdict, severity",
        palette="Filter",
        palette_help="By host, protocol, cause id, verdict, severity",
    ),
    Key(
        "slash",
        "find",
        View.SESSIONS,
        "Find",
        "find text in the list: matches are highlighted, the status shows which of how many",
        palette="Find",
        palette_help="Find text in the list",
    ),
    Key(
        "left_square_bracket",
        "previous_session",
        View.SESSIONS,
        "Previous session",
        "previous / next session, in the list and in the full-screen detail",
        palette="Previous session",
        palette_help="The session before this one, in both views",
        key_display="[",
        group=SESSION,
    ),
    Key(
        "right_square_bracket",
        "next_session",
        View.SESSIONS,
        "Next session",
        "",
        palette="Next session",
        palette_help="The session after this one, in both views",
        key_display="]",
        group=SESSION,
    ),
    Key(
        "space",
        "page_detail_down",
        View.SESSIONS,
        "Page detail",
        "scroll the detail a page down / up (as in less), in both views",
        key_display="space",
    ),
    Key("b", "page_detail_up", View.SESSIONS, "Page back", "", footer=False),
    Key(
        "ctrl+d",
        "half_page_detail_down",
        View.SESSIONS,
        "Half page",
        "scroll the detail half a page down / up",
        footer=False,
    ),
    Key("ctrl+u", "half_page_detail_up", View.SESSIONS, "Half page up", "", footer=False),
    Key(
        "right",
        "column_right",
        View.LIST,
        "Scroll right",
        "scroll the list sideways, a column at a time",
        footer=False,
    ),
    Key("left", "column_left", View.LIST, "Scroll left", "", footer=False),
    Key(
        "n",
        "find_next",
        View.SESSIONS,
        "Next match",
        "next / previous match of the find",
        palette="Find next",
        palette_help="Next match of the find",
        group=MATCH,
    ),
    Key(
        "N",
        "find_previous",
        View.SESSIONS,
        "Prev match",
        "",
        palette="Find previous",
        palette_help="Previous match of the find",
        group=MATCH,
    ),
    Key(
        "F",
        "toggle_follow",
        View.SESSIONS,
        "Follow",
        "follow on/off: read what is appended; the list moves with the newest session while "
        "its cursor is on the last one, otherwise the status counts the new ones (+N new)",
        palette="Follow on/off",
        palette_help="Read sessions as they are recorded",
    ),
    Key(
        "a",
        "toggle_all",
        View.SESSIONS,
        "All/failing",
        "show all sessions, or only the failing ones",
        palette="Show all sessions / only failing",
        palette_help="Toggle between every session and the failing ones",
    ),
    Key(
        "v",
        "toggle_grouped",
        View.SESSIONS,
        "Grouped",
        "grouped view: one line per requested host + certificate + cause, with a count",
        palette="Grouped view on/off",
        palette_help="One line per host + certificate + cause",
    ),
    Key(
        "c",
        "export",
        View.SESSIONS,
        "Export",
        "export the selected session: JSON and PEM chain to a directory you choose, JSON "
        "to the clipboard",
        palette="Export selected session",
        palette_help="JSON and PEM chain to files in a directory you choose",
    ),
    Key(
        "ctrl+p",
        "command_palette",
        View.SESSIONS,
        "palette",
        "command palette: the same actions by name",
        textual=True,
    ),
    Key("escape,q,question_mark", "close", View.HELP, "Close help", "close this help"),
    # The help scrolls with the arrows, PgDn/PgUp and Home/End by itself, and as in less.
    Key(
        "j",
        "help_line_down",
        View.HELP,
        "Down",
        "in this help: j / k scroll a line, space / b a page, g / G to its top / end",
        footer=False,
    ),
    Key("k", "help_line_up", View.HELP, "Up", None, footer=False),
    Key("space", "help_page_down", View.HELP, "Page down", None, footer=False),
    Key("b", "help_page_up", View.HELP, "Page up", None, footer=False),
    Key("g", "help_top", View.HELP, "Top", None, footer=False),
    Key("G", "help_end", View.HELP, "End", None, footer=False),
    Key("escape", "cancel", View.PROMPT, "Cancel", "close a prompt (filter, find) unchanged"),
    Key("y", "yes", View.CONFIRM, "Yes", "yes, in a question (quit while the proxy records)"),
    Key("n,escape", "no", View.CONFIRM, "No", "no: stay"),
)

COMMAND_PALETTE = next(key for key in KEYS if key.action == "command_palette").keys


def keys_for(view: View) -> tuple[Key, ...]:
    """The entries that apply in ``view``."""
    return tuple(key for key in KEYS if key.where & view)


def bindings(view: View) -> list[BindingType]:
    """The ``BINDINGS`` of the screen that shows ``view``."""
    return [key.binding() for key in keys_for(view) if not key.textual]


def help_lines() -> list[tuple[str, str]]:
    """(keys as typed, what they do) for the help screen, in table order.

    A key whose ``help`` is empty shares the line of the key before it: "PgDn / PgUp"; one
    whose ``help`` is None has no line of its own.
    """
    lines: list[tuple[str, str]] = []
    for key in KEYS:
        if key.help is None:
            continue
        if key.help:
            lines.append((key.shown, key.help))
        else:
            shown, text = lines[-1]
            lines[-1] = (f"{shown} / {key.shown}", text)
    return lines


def system_commands(node: DOMNode, view: View) -> Iterator[SystemCommand]:
    """The command palette's commands for the keys of ``view``, run as actions of ``node``."""
    for key in keys_for(view):
        if key.palette:
            yield SystemCommand(
                key.palette,
                f"{key.palette_help} ({_DISPLAY.get(key.names[0], key.names[0])})",
                getattr(node, f"action_{key.action}"),
            )
