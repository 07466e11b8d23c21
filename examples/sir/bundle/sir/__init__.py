"""A small stochastic SIR epidemic model (an example lockstep job bundle)."""
