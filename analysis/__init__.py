"""The analysis behind analyze.py, one concern per module (analyze.py stays the command line):

    powerlaw.py   the saturating power law y = E + B*x^-a fitted by variable projection; percentile
                  intervals and rank correlation shared by the modules below
    transfer.py   the transfer matrix t_ij from pair runs and specialists (EXPERIMENT_PLAN.md, P3)
    hilberg.py    compression-rate curves r(n) of each category's text and the Hilberg fit (H7)
    isoflop.py    IsoFLOP slices: loss against N at fixed compute 6*N*D, the compute-optimal N per K
    synthetic.py  fabricated sweeps and curves with known truths, for the tests and benchmarks
    mixing.py     competing mixing laws (Ye et al.'s exponential, He et al.'s multiplicative, one shared
                  transfer tau) beside the dilution forms, and which forms the design cannot tell apart
    huber.py      the Huber loss on log residuals that every law fit minimises
"""
