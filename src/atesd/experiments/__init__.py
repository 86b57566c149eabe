"""Commands that analyse or compare runs, built on the core package: the bench, run reports, the
fixed-exposure mismatch analysis, the toy world's report, the demo, and the one evaluation protocol
of every toy comparison. The core (`atesd.train` and what it calls) imports nothing from here."""
