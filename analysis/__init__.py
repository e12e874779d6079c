"""The analysis behind analyze.py, one concern per module (analyze.py stays the command line); nothing here
imports analyze.py or baselines.py (they import this package):

    powerlaw.py   the saturating power law y = E + B*x^-a fitted by variable projection; percentile
                  intervals and rank correlation shared by the modules below
    transfer.py   the transfer matrix t_ij from pair runs and specialists (EXPERIMENT_PLAN.md, P3), per
                  model from analyze.py's rows, its intervals (test inversion) and asymmetry
    transfer_report.py  the transfer matrix's report sections and heatmaps
    hilberg.py    compression-rate curves r(n) of each category's text and the Hilberg fit; H7 (cached
                  curves against the specialists' data exponents), its verdict and report section
    isoflop.py    IsoFLOP slices: loss against N at fixed compute 6*N*D, the compute-optimal N per K
    synthetic.py  fabricated sweeps and curves with known truths, for the tests and benchmarks
    runs.py       collecting run directories (used or excluded with a reason), groups and selection, the
                  run table (runs.csv)
    law_data.py   the arrays a law fit reads: the kept points (DATA_FILTER) from the run rows, on tokens
                  seen or on effective tokens (repeated data, R*)
    laws.py       the dilution / disjoint / shared law, its fit, the bootstrap over seed clusters, the
                  stratified jackknife's 95% intervals and how intervals are printed
    identifiability.py  what a design cannot pin (flat profiles: one K, one budget, too few points / sizes)
    workers.py    the bootstrap's worker processes (single-threaded BLAS, none left behind on a stop)
    repetition.py the dilution law on effective tokens (repeated data), R* halved / doubled, before / after
    beta_by_k.py  one data exponent against one per K: the learning curves flatten / steepen with K?
    noise_structure.py  variance components of seed noise from replicate groups (per run and category,
                  shared across a seed cluster's budgets, run level; init vs data order)
    forms.py      comparing the forms: cross-validation over subset seeds, held-out error differences
    progress.py   progress lines on stderr for steps longer than a few seconds; each warning once
    noise.py      the seed-to-seed noise floor and the residual diagnostics against it
    hypotheses.py H1-H6 decided by their falsifiers, the verdict table and the report's headline
    h2ratio.py    H2's second half: the loss growth with K against the disjoint prediction K^beta
    plots.py      the report's figures
    report.py     report.md, fits.json and groups.md
    mixing.py     competing mixing laws (Ye et al.'s exponential, He et al.'s multiplicative, and the
                  effective-data law with one tau) beside the dilution forms, and which forms the design cannot tell apart
    huber.py      the Huber loss on log residuals that every law fit minimises
    inference.py  the one inference core: independent units (seed clusters, categories, both), t intervals
                  for few units, the two-way contrast of H2 / H5, the guard no degenerate interval passes,
                  Holm families and 'best only if it beats every other'
"""
