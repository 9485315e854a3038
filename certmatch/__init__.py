"""certmatch: why does the mail server's certificate not match the name the client asked for?"""

__version__ = "0.1.0"
