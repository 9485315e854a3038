"""The footer: the keys of the key table that fit the width, whole, in the table's order.

Textual's ``Footer`` runs a group's keys together (``jkgGPgDnPgUp Move``) and, when the keys
are wider than the terminal, cuts the last one mid-word under the command palette's key,
whose margin lets a letter of the hidden keys show through (``^p paletter``). This footer
shows a group as its keys with slashes (``j/k Move``), leaves out the keys that do not fit
(the help, ``?``, lists them all; ``? Help`` and ``q Quit`` come first in the table, so they
are always there), and is composed again when the width changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # not exported by textual.widgets (8.2)


@dataclass(frozen=True, slots=True)
class FooterEntry:
    """One key (or group of keys) as the footer shows it."""

    key: str  # the key a click on it presses
    display: str  # "j/k"
    description: str  # "Move"
    actions: tuple[str, ...]  # what its keys run, the clicked key's first
    enabled: bool
    tooltip: str

    @property
    def width(self) -> int:
        """Its cells in a compact footer: keys, a space, the words, a space after."""
        return cell_len(self.display) + 1 + cell_len(self.description) + 1


def footer_entries(
    bindings: list[tuple[Binding, bool, str]], key_display: Callable[[Binding], str]
) -> list[FooterEntry]:
    """The footer's entries for ``bindings`` (binding, enabled, tooltip), in order: one per
    action (its first key), and one per run of actions of the same group."""
    by_action: dict[str, tuple[Binding, bool, str]] = {}
    for binding, enabled, tooltip in bindings:
        if binding.show and binding.action not in by_action:
            by_action[binding.action] = (binding, enabled, tooltip)
    entries: list[FooterEntry] = []
    group: Binding.Group | None = None
    for binding, enabled, tooltip in by_action.values():
        display = key_display(binding)
        if binding.group is not None and binding.group == group and entries:
            last = entries[-1]
            entries[-1] = FooterEntry(
                last.key,
                f"{last.display}/{display}",
                last.description,
                (*last.actions, binding.action),
                last.enabled or enabled,
                last.tooltip,
            )
            continue
        group = binding.group
        entries.append(
            FooterEntry(
                binding.key.split(",")[0],
                display,
                group.description if group is not None else binding.description,
                (binding.action,),
                enabled,
                tooltip or binding.description,
            )
        )
    return entries


def fitting(entries: list[FooterEntry], width: int) -> list[FooterEntry]:
    """The entries that fit in ``width`` cells, whole, in order (one that does not fit is left
    out, and a later, shorter one may still fit)."""
    shown: list[FooterEntry] = []
    used = 0
    for entry in entries:
        if used + entry.width <= width:
            shown.append(entry)
            used += entry.width
    return shown


class KeyFooter(Footer):
    """The keys that apply now, as many as fit, never cut; ``^p palette`` on the right."""

    DEFAULT_CSS = """
    KeyFooter.-compact FooterKey.-command-palette {
        margin-right: 0;  /* Textual's margin here is never painted: a hidden key showed */
    }
    """

    def __init__(self) -> None:
        super().__init__(compact=True)
        self._composed_for = -1  # the width the keys were chosen for
        self.shown: list[FooterEntry] = []  # what it shows now, left to right

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        width = self.size.width or self.app.size.width
        self._composed_for = width
        active = self.screen.active_bindings
        palette = None
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        room = width
        if palette is not None:
            _node, binding, _enabled, _tooltip = palette
            # its border, keys, a space and words, flush right
            room -= 1 + cell_len(self.app.get_key_display(binding)) + 1 + len(binding.description)
        entries = footer_entries(
            [(binding, enabled, tooltip) for _n, binding, enabled, tooltip in active.values()],
            self.app.get_key_display,
        )
        if palette is not None and sum(entry.width for entry in entries[:2]) > room:
            palette, room = None, width  # help and quit come before the palette's key
        self.shown = fitting(entries, room)
        for entry in self.shown:
            yield FooterKey(
                entry.key,
                entry.display,
                entry.description,
                entry.actions[0],
                disabled=not entry.enabled,
                tooltip=entry.tooltip,
            ).data_bind(compact=Footer.compact)
        if palette is not None:
            _node, binding, enabled, _tooltip = palette
            yield FooterKey(
                binding.key,
                self.app.get_key_display(binding),
                binding.description,
                binding.action,
                classes="-command-palette",
                disabled=not enabled,
                tooltip=binding.tooltip or binding.description,
            )

    def on_resize(self, event: events.Resize) -> None:
        if self._bindings_ready and event.size.width != self._composed_for:
            self.call_after_refresh(self.recompose)
