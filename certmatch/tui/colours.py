"""The TUI's own colours, chosen for contrast on the default (dark) theme.

Every one reaches WCAG AA (4.5:1) against the backgrounds it is drawn on; a test measures
the rendered screens cell by cell (``tests/test_tui.py``). ``dim`` is not used: terminals
render it too faint to read. Without colour (``NO_COLOR``, ``TERM=dumb``) none of these is
drawn: the symbols, bold and reverse video carry the meaning.
"""

RED = "#ff6e6e"  # a failure, on the dark surface (6:1)
GREEN = "#98e024"
YELLOW = "#ffd75f"
CYAN = "#5fd7ff"
MUTED = "#a8a8a8"  # secondary text, instead of dim
ALERT_BACKGROUND = "#b00020"  # under white text: a security finding, a dead proxy (7:1)
ALERT = f"bold #ffffff on {ALERT_BACKGROUND}"
