"""Stage 6, studies: experiments that chain every stage and write reports.

Owns the end-to-end job (`reproduce`) and the leakage audit of the published protocol (`audit`).
May import every earlier stage; nothing imports it except the command line.
"""
