"""Stage 6, studies: experiments that chain every stage and write reports.

Owns the end-to-end job (`reproduce`), the leakage audit of the published protocol (`audit`) and
the unknown-lesion study (`ood`: train with one class held out, score its detection), the
preprocessing ablation (`ablate`, its report `ablation_report`). May import every earlier stage;
nothing imports it except the command line.
"""
