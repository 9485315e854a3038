"""certmatch's terminal UI (Textual): browse recorded sessions and why they fail.

Only this package imports Textual; it reads recordings and calls the domain
(``certmatch.core``) for every judgement, and holds no analysis of its own.
"""
